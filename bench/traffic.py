"""The traffic every benchmark uses: copies of the recorded calls, and what each must send."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from hangupsms.frames import Frame
from hangupsms.synthetic import FrameFilter, SyntheticTraffic, keep_events

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ami"
# Every recorded call as one manager user with all read classes sees it (a_readonly is call
# `a` seen by a user without the `agent` class: one PBX login does not mix both views).
TEMPLATES = ("a", "b", "c", "d", "f", "g", "g_fastagi", "h_anonymous", "h_unicode")
REFERENCE_CONFIG = FIXTURES / "reference.yaml"
SEED = 20261207

# The events CallTracker acts on (hangupsms/calls.py `_routes`); everything else is dropped
# at its first dictionary lookup. The AMI-side filter a manager.conf `eventfilter` gives.
TRACKED_EVENTS = (
    "Newchannel", "NewCallerid", "Hangup", "DialBegin", "DialEnd", "BridgeEnter", "VarSet",
    "UserEvent", "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentConnect",
    "BlindTransfer", "AttendedTransfer", "Cdr", "CEL",
)  # fmt: skip
_TRACKED = frozenset(TRACKED_EVENTS)


def _minimal(frame: Frame) -> bool:
    """The tracked events, VarSet only for HANGUPSMS_* (209 of the 214 recorded VarSets are
    Asterisk's own DIALSTATUS, BRIDGEPEER…, which the tracker ignores)."""
    name = frame.first("Event")
    if name == "VarSet":
        return (frame.first("Variable") or "").startswith("HANGUPSMS_")
    return name in _TRACKED


# What the AMI side may filter: nothing; every event but those the tracker ignores; and that
# with VarSet narrowed to our variables. Each keeps every fact (tests/test_synthetic.py).
FILTERS: dict[str, FrameFilter | None] = {
    "none": None, "tracked": keep_events(TRACKED_EVENTS), "minimal": _minimal,
}


def transcripts() -> list[Path]:
    return [FIXTURES / f"{name}.ami" for name in TEMPLATES]


def traffic(calls: int, concurrency: int, *, event_filter: str = "none",
            seed: int = SEED) -> SyntheticTraffic:
    """The benchmark stream: distinct customer numbers, as in a real call centre."""
    return SyntheticTraffic(calls, concurrency=concurrency, seed=seed,
                            transcripts=transcripts(), distinct_numbers=True,
                            keep=FILTERS[event_filter])


def expected_sends(templates: Iterable[str]) -> int:
    """How many messages the reference configuration sends for calls copying `templates`."""
    raw: dict[str, list[dict[str, Any]]] = yaml.safe_load(
        (FIXTURES / "expected-messages.yaml").read_text(encoding="utf-8"))
    per_call = {name: sum(len(call["sent"]) for call in calls) for name, calls in raw.items()}
    return sum(per_call[name] * count for name, count in Counter(templates).items())


def mean_call_seconds(stream: SyntheticTraffic) -> float:
    """The slot period of `stream`: a call's mean duration plus the mean pause after it."""
    durations = [t.duration for t in stream.templates]
    return sum(durations) / len(durations) + stream.max_gap / 2
