"""Planning: the reference configuration turns each recorded call into exactly its messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from hangupsms.config import AgentConfig, Config, load_config, parse_config
from hangupsms.models import CompletedCall, Direction, Disposition, EndReason, PlannedMessage
from hangupsms.planner import plan
from hangupsms.render import Renderer

FIXTURES = Path(__file__).parent / "fixtures" / "ami"


def load_yaml(name: str) -> Any:
    return yaml.safe_load((FIXTURES / name).read_text(encoding="utf-8"))


def call_from_answer_key(fact: dict[str, Any]) -> CompletedCall:
    """The CompletedCall a correct tracker derives, built from expected-calls.yaml."""
    # The Linkedid's integer part is the epoch second the call started.
    started = float(str(fact["linkedid"]).split(".", 1)[0])
    return CompletedCall(
        pbx="lab",
        linkedid=str(fact["linkedid"]),
        direction=Direction(fact["direction"]),
        customer_number=fact["customer_number"],
        customer_name=fact["customer_name"],
        presentation_restricted=fact["presentation_restricted"],
        did=fact["did"],
        queue=fact["queue"],
        answered=fact["answered"],
        disposition=Disposition(fact["disposition"]),
        queue_abandoned=fact["queue_abandoned"],
        agent_id=fact["agent_id"],
        agent_name=fact["agent_name"],
        agents_involved=tuple(fact["agents_involved"]),
        talk_seconds=fact["talk_seconds"],
        wait_seconds=fact["ring_or_hold_seconds"],
        variables=dict(fact["variables"]),
        transferred=fact["transferred"],
        started_at=started,
        ended_at=started + fact["ring_or_hold_seconds"] + fact["talk_seconds"],
        end_reason=EndReason.LINKEDID_END if fact["linkedid_end_seen"] else EndReason.NO_CHANNELS,
        linkedid_end_seen=fact["linkedid_end_seen"],
        hangup_events=fact["hangup_events"],
        cdr_events=fact["cdr_events"],
    )


ANSWER_KEY = load_yaml("expected-calls.yaml")
EXPECTED = load_yaml("expected-messages.yaml")
CASES = [
    pytest.param(fact, id=f"{fact['transcript']}-{fact['linkedid']}")
    for fact in ANSWER_KEY
]  # fmt: skip


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(FIXTURES / "reference.yaml", environ={})


def test_answer_key_and_expected_messages_cover_the_same_calls() -> None:
    calls = {(fact["transcript"], str(fact["linkedid"])) for fact in ANSWER_KEY}
    expected = {(name, str(item["linkedid"])) for name, items in EXPECTED.items() for item in items}
    assert calls == expected
    assert len(calls) == 10


@pytest.mark.parametrize("fact", CASES)
def test_reference_config_plans_exactly_the_expected_messages(
    cfg: Config, fact: dict[str, Any]
) -> None:
    [expected] = [
        item
        for item in EXPECTED[fact["transcript"]]
        if str(item["linkedid"]) == str(fact["linkedid"])
    ]
    planned = plan(call_from_answer_key(fact), cfg, Renderer.from_config(cfg))
    sent = [(m.rule, m.to, m.body.text if m.body else None) for m in planned if not m.skip_reason]
    assert sent == [(item["rule"], item["to"], item["body"]) for item in expected["sent"]]
    skipped = [m for m in planned if m.skip_reason]
    assert [m.rule for m in skipped] == [item["rule"] for item in expected["skipped"]]
    for message, item in zip(skipped, expected["skipped"], strict=True):
        assert message.skip_reason is not None
        assert message.skip_reason.startswith(item["why"])


def planned_for(cfg: Config, call: CompletedCall) -> list[PlannedMessage]:
    return plan(call, cfg, Renderer.from_config(cfg))


def reference_call(transcript: str) -> CompletedCall:
    [fact] = [fact for fact in ANSWER_KEY if fact["transcript"] == transcript]
    return call_from_answer_key(fact)


def test_unreadable_customer_is_skipped_with_reason_and_raw_recipient(cfg: Config) -> None:
    [message] = planned_for(cfg, reference_call("h_anonymous"))
    assert message.skip_reason == "customer number 'anonymous' is not textable: not a number"
    assert (message.to, message.recipient, message.provider) == ("anonymous", "customer", "twilio")
    assert message.body is not None  # what would have been sent stays on record
    assert message.body.text == "Thanks for calling, Anonymous. You spoke with agent1."


def test_customer_in_a_region_not_allowed_is_skipped_with_its_e164(cfg: Config) -> None:
    gb_only = dataclasses.replace(
        cfg, phone=dataclasses.replace(cfg.phone, allowed_regions=("GB",))
    )
    missed, alert = planned_for(gb_only, reference_call("c"))
    assert (missed.to, missed.skip_reason) == (
        "+33612345678",
        "customer number '+33612345678' is not textable: region FR not allowed",
    )
    assert alert.skip_reason is None
    assert alert.body is not None
    assert alert.body.text == "Missed call from +33612345678 to 4002."


AGENT_RULES = """\
rules:
  - name: agent-note
    when: {answered: true}
    send: {template: note, to: agent, via: twilio}
  - name: broken
    when: {answered: true}
    send: {template: broken, to: customer, via: twilio}
templates:
  note: "Call from {{ customer_number }} ({{ talk_seconds }} s)"
  broken: "Order {{ vars.HANGUPSMS_ORDER }}"
"""


def agent_config(agents: str) -> Config:
    reference = (FIXTURES / "reference.yaml").read_text(encoding="utf-8")
    head = reference[: reference.index("templates:")]
    return parse_config(head + AGENT_RULES + agents, environ={})


def test_agent_recipient_uses_the_directory_mobile() -> None:
    cfg = agent_config("agents:\n  agent1: {name: Agent One, mobile: '07700 900111'}\n")
    note, broken = planned_for(cfg, reference_call("a"))
    assert (note.rule, note.recipient, note.to, note.skip_reason) == (
        "agent-note", "agent", "+447700900111", None,
    )  # fmt: skip
    assert note.body is not None
    assert note.body.text == "Call from +447700900123 (2 s)"
    assert broken.skip_reason is not None
    assert broken.skip_reason.startswith("render failed: ")
    assert "HANGUPSMS_ORDER" in broken.skip_reason
    assert broken.body is None


def test_agent_without_a_mobile_is_skipped() -> None:
    cfg = agent_config("agents:\n  agent1: {name: Agent One}\n")
    note = planned_for(cfg, reference_call("a"))[0]
    assert (note.to, note.skip_reason) == ("", "no mobile for agent agent1")
    cfg = dataclasses.replace(cfg, agents={"agent9": AgentConfig("agent9", mobile="+447700900111")})
    assert planned_for(cfg, reference_call("a"))[0].skip_reason == "no mobile for agent agent1"


def test_evicted_call_plans_nothing(cfg: Config) -> None:
    call = dataclasses.replace(reference_call("a"), end_reason=EndReason.EVICTED)
    assert planned_for(cfg, call) == []
