"""Which rules a completed call matches: in order, the first match wins for each recipient."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from hangupsms.config import Rule, RuleMatch, TimeWindow
from hangupsms.models import CompletedCall, EndReason


def select(
    call: CompletedCall,
    rules: Sequence[Rule],
    tz: ZoneInfo,
    customer_e164: str | None = None,
) -> list[Rule]:
    """The rules that fire for `call`, in configuration order.

    A rule is skipped when an earlier matching rule already sends to the same recipient
    (`customer`, `agent`, `notify`, or one fixed number). `customer_e164` is the customer's
    number in E.164 when it could be read; `customer_number` patterns are searched in it and
    in the raw number. A call evicted without a proper end never matches: its facts are incomplete.
    """
    if call.end_reason is EndReason.EVICTED:
        return []
    claimed: set[str] = set()
    selected: list[Rule] = []
    for rule in rules:
        if rule.send.to in claimed or not matches(rule.when, call, tz, customer_e164):
            continue
        claimed.add(rule.send.to)
        selected.append(rule)
    return selected


def matches(
    when: RuleMatch, call: CompletedCall, tz: ZoneInfo, customer_e164: str | None = None
) -> bool:
    """Whether every condition of `when` holds for `call`."""
    return (
        _facts_match(when, call)
        and _talk_matches(when, call)
        and _number_matches(when.customer_number, call.customer_number, customer_e164)
        and all(call.variables.get(name) == value for name, value in when.vars.items())
        and (when.time is None or in_windows(when.time, call.ended_at, tz))
    )


def _facts_match(when: RuleMatch, call: CompletedCall) -> bool:
    return (
        (when.direction is None or when.direction == call.direction.value)
        and _one_of(when.did, call.did)
        and _one_of(when.queue, call.queue)
        and _one_of(when.agent, call.agent_id)
        and (when.answered is None or when.answered == call.answered)
        and _one_of(when.disposition, call.disposition.value)
    )


def _one_of(wanted: tuple[str, ...] | None, actual: str | None) -> bool:
    return wanted is None or (actual is not None and actual in wanted)


def _talk_matches(when: RuleMatch, call: CompletedCall) -> bool:
    low, high = when.min_talk_seconds, when.max_talk_seconds
    return (low is None or call.talk_seconds >= low) and (high is None or call.talk_seconds <= high)


def _number_matches(pattern: str | None, raw: str, e164: str | None) -> bool:
    if pattern is None:
        return True
    return any(re.search(pattern, form) for form in (raw, e164) if form)


def in_windows(windows: Sequence[TimeWindow], epoch: float, tz: ZoneInfo) -> bool:
    """Whether the moment `epoch` falls in any of the weekly `windows`, read in `tz`."""
    local = datetime.fromtimestamp(epoch, tz)
    day, minute = local.weekday(), local.hour * 60 + local.minute
    for window in windows:
        if window.start_minute < window.end_minute:
            if day in window.days and window.start_minute <= minute < window.end_minute:
                return True
        elif (day in window.days and minute >= window.start_minute) or (
            (day - 1) % 7 in window.days and minute < window.end_minute
        ):
            return True
    return False
