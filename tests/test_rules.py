"""Rule selection: conditions, first match per recipient, weekly time windows."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from hangupsms.config import Rule, RuleMatch, RuleSend, TimeWindow
from hangupsms.models import CompletedCall, Direction, Disposition, EndReason
from hangupsms.rules import in_windows, matches, select

LONDON = ZoneInfo("Europe/London")
# 2026-07-03 is a Friday.
FRIDAY_NOON = datetime(2026, 7, 3, 12, 0, tzinfo=LONDON).timestamp()

CALL = CompletedCall(
    pbx="lab",
    linkedid="1796413068.0",
    direction=Direction.INBOUND,
    customer_number="07700900123",
    customer_name="Alice",
    presentation_restricted=False,
    did="4000",
    queue="support",
    answered=True,
    disposition=Disposition.ANSWERED,
    queue_abandoned=False,
    agent_id="agent1",
    agent_name="Agent One",
    agents_involved=("agent1",),
    talk_seconds=30,
    wait_seconds=4,
    variables={"HANGUPSMS_TEMPLATE": "appointment", "HANGUPSMS_ORDER": "A-1"},
    transferred=False,
    started_at=FRIDAY_NOON - 34,
    ended_at=FRIDAY_NOON,
    end_reason=EndReason.LINKEDID_END,
    linkedid_end_seen=True,
)


def rule(name: str, to: str = "customer", **when: object) -> Rule:
    match = RuleMatch(**when)  # type: ignore[arg-type]
    return Rule(name, match, RuleSend(template="t", to=to, via=("p",)))


def names(rules: list[Rule]) -> list[str]:
    return [item.name for item in rules]


def test_first_match_wins_for_each_recipient() -> None:
    rules = [
        rule("appointment", vars=MappingProxyType({"HANGUPSMS_TEMPLATE": "appointment"})),
        rule("thanks", answered=True),
        rule("agent-note", to="agent", answered=True),
        rule("manager", to="+447700900777"),
        rule("agent-again", to="agent"),
        rule("missed", answered=False),
    ]
    assert names(select(CALL, rules, LONDON)) == ["appointment", "agent-note", "manager"]


def test_a_rule_that_does_not_match_claims_no_recipient() -> None:
    rules = [rule("missed", answered=False), rule("thanks", answered=True)]
    assert names(select(CALL, rules, LONDON)) == ["thanks"]


def test_evicted_call_matches_nothing() -> None:
    call = dataclasses.replace(CALL, end_reason=EndReason.EVICTED)
    assert select(call, [rule("any")], LONDON) == []


def test_no_end_of_call_marker_still_matches() -> None:
    call = dataclasses.replace(CALL, end_reason=EndReason.NO_CHANNELS, linkedid_end_seen=False)
    assert names(select(call, [rule("any")], LONDON)) == ["any"]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"direction": "inbound"}, True),
        ({"direction": "outbound"}, False),
        ({"did": ("4000", "4001")}, True),
        ({"did": ("4001",)}, False),
        ({"queue": ("support",)}, True),
        ({"queue": ("sales",)}, False),
        ({"agent": ("agent1",)}, True),
        ({"agent": ("agent2",)}, False),
        ({"disposition": ("answered", "busy")}, True),
        ({"disposition": ("no_answer",)}, False),
        ({"answered": False}, False),
        ({"min_talk_seconds": 30}, True),
        ({"min_talk_seconds": 31}, False),
        ({"max_talk_seconds": 30}, True),
        ({"max_talk_seconds": 29}, False),
    ],
)
def test_single_conditions(condition: dict[str, object], expected: bool) -> None:
    assert matches(RuleMatch(**condition), CALL, LONDON) is expected  # type: ignore[arg-type]


def test_a_condition_on_a_missing_fact_does_not_match() -> None:
    call = dataclasses.replace(CALL, queue=None, did=None, agent_id=None)
    for condition in ({"queue": ("support",)}, {"did": ("4000",)}, {"agent": ("agent1",)}):
        assert not matches(RuleMatch(**condition), call, LONDON)  # type: ignore[arg-type]


def test_vars_must_all_have_the_exact_value() -> None:
    def when(**values: str) -> RuleMatch:
        return RuleMatch(vars=MappingProxyType(values))

    assert matches(when(HANGUPSMS_TEMPLATE="appointment", HANGUPSMS_ORDER="A-1"), CALL, LONDON)
    assert not matches(when(HANGUPSMS_TEMPLATE="Appointment"), CALL, LONDON)
    assert not matches(when(HANGUPSMS_TEMPLATE="appointment", HANGUPSMS_X="1"), CALL, LONDON)


def test_customer_number_pattern_searches_raw_and_e164_forms() -> None:
    assert matches(RuleMatch(customer_number=r"^07700"), CALL, LONDON)
    assert not matches(RuleMatch(customer_number=r"^\+44"), CALL, LONDON)
    assert matches(RuleMatch(customer_number=r"^\+44"), CALL, LONDON, "+447700900123")
    assert not matches(RuleMatch(customer_number=r"^\+33"), CALL, LONDON, "+447700900123")


def test_select_uses_the_e164_form_for_number_patterns() -> None:
    rules = [rule("uk", customer_number=r"^\+447")]
    assert names(select(CALL, rules, LONDON, "+447700900123")) == ["uk"]
    assert select(CALL, rules, LONDON) == []


def at(day: int, hour: int, minute: int) -> float:
    """Epoch of 2026-07-(day) hour:minute in London; the 6th is a Monday."""
    return datetime(2026, 7, day, hour, minute, tzinfo=LONDON).timestamp()


OFFICE = TimeWindow(frozenset({0, 1, 2, 3, 4}), 9 * 60, 17 * 60 + 30)
FRIDAY_NIGHT = TimeWindow(frozenset({4}), 22 * 60, 6 * 60)


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        (at(6, 9, 0), True),  # Monday, opening minute
        (at(6, 17, 29), True),
        (at(6, 17, 30), False),  # `to` is exclusive
        (at(6, 8, 59), False),
        (at(4, 12, 0), False),  # Saturday
    ],
)
def test_office_hours_window(when: float, inside: bool) -> None:
    assert in_windows([OFFICE], when, LONDON) is inside


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        (at(3, 22, 0), True),  # Friday late
        (at(3, 23, 59), True),
        (at(4, 0, 0), True),  # Saturday morning belongs to Friday's window
        (at(4, 5, 59), True),
        (at(4, 6, 0), False),
        (at(3, 21, 59), False),
        (at(3, 5, 0), False),  # Friday morning would be Thursday's night
        (at(4, 22, 30), False),  # Saturday night is not listed
    ],
)
def test_window_wrapping_past_midnight(when: float, inside: bool) -> None:
    assert in_windows([FRIDAY_NIGHT], when, LONDON) is inside


def test_any_window_of_a_list_may_match() -> None:
    assert in_windows([OFFICE, FRIDAY_NIGHT], at(4, 1, 0), LONDON)
    assert not in_windows([OFFICE, FRIDAY_NIGHT], at(5, 1, 0), LONDON)


def test_window_is_read_in_the_configured_timezone() -> None:
    # 08:30 UTC on a July Monday is 09:30 in London (BST) but 04:30 in New York.
    epoch = datetime(2026, 7, 6, 8, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert in_windows([OFFICE], epoch, LONDON)
    assert not in_windows([OFFICE], epoch, ZoneInfo("America/New_York"))


def test_time_condition_uses_the_end_of_the_call() -> None:
    evening = dataclasses.replace(CALL, started_at=at(3, 17, 29), ended_at=at(3, 17, 31))
    assert not matches(RuleMatch(time=(OFFICE,)), evening, LONDON)
    assert matches(RuleMatch(time=(OFFICE,)), CALL, LONDON)
