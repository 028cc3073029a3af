"""The policy stage: suppression, windows, caps and budget, the fraud guard ─► Decision."""

from hangupsms.policy.decisions import (
    OPTED_OUT,
    Cancellable,
    Decision,
    SendFacts,
    Verdict,
    Waiting,
    cancellations,
    decide,
    prepare,
    rule_caps,
    suppress,
    windows_for,
    with_incident,
)

__all__ = [
    "OPTED_OUT",
    "Cancellable",
    "Decision",
    "SendFacts",
    "Verdict",
    "Waiting",
    "cancellations",
    "decide",
    "prepare",
    "rule_caps",
    "suppress",
    "windows_for",
    "with_incident",
]
