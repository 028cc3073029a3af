"""Policy decisions, pure and clocked by argument: at planning time and before each send."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from hangupsms.config_policy import CN_OPT_OUT, CN_SIGNATURE
from hangupsms.models import CompletedCall, PlannedMessage
from hangupsms.policy.limits import GuardFacts, cap_wait, describe_cap, guard_trip, price
from hangupsms.policy.windows import describe, next_clock, next_opening, recipient_zones
from hangupsms.render import measure
from hangupsms.settings import Cap, Config, Rule, TimeWindow
from hangupsms.usstates import us_state

OPTED_OUT = "opted out (suppression list)"


class Verdict(enum.StrEnum):
    SEND_NOW = "send_now"
    SEND_AT = "send_at"  # deferred: a window, a delay or a cap; `at` says until when
    SKIP = "skip"
    EXPIRE = "expire"  # not sendable before its `expires_after`
    HOLD = "hold"  # the fraud guard: a human decides


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    at: float | None = None


SEND_NOW = Decision(Verdict.SEND_NOW)


def windows_for(cfg: Config, category: str, region: str | None,
                to: str = "") -> tuple[TimeWindow, ...]:
    """The send windows of `category` for number `to` in `region` (empty: any time).

    The most specific key wins: the US state of the area code, the region, `default`.
    """
    windows = cfg.policy.categories[category].windows
    state = us_state(to) if region == "US" and to else None
    if state is not None and f"US-{state}" in windows:
        return windows[f"US-{state}"]
    return windows.get(region or "", windows.get("default", ()))


def _zones(cfg: Config, to: str) -> tuple[ZoneInfo, ...]:
    return recipient_zones(to or None, cfg.timezone, cfg.policy.recipient_timezone)


def prepare(message: PlannedMessage, rule: Rule, cfg: Config, now: float) -> PlannedMessage:
    """`message` with its category, footer, cost and schedule; or skipped, with the reason."""
    category = cfg.templates[rule.send.template].category
    message = dataclasses.replace(
        message, category=category, priority=rule.priority,
        cancel_if_answered=rule.send.cancel_if_answered)
    if message.skip_reason:
        return message
    if message.body is not None and category == "marketing":
        footer = _footer(cfg, message.region)
        if footer is None:
            need = "with a 【signature】 and opt-out" if message.region == "CN" else "configured"
            return dataclasses.replace(message, skip_reason=(
                f"marketing to {message.region}: no footer {need}"))
        message = dataclasses.replace(message, body=measure(f"{message.body.text}\n{footer}"))
    segments = message.body.segments if message.body else 0
    message = dataclasses.replace(message, cost=price(cfg.policy.prices, message.region, segments))
    return _schedule(message, rule, cfg, now)


def suppress(planned: Sequence[PlannedMessage], suppressed: frozenset[str]
             ) -> list[PlannedMessage]:
    """`planned` with every message to a suppressed number skipped (the first reason kept)."""
    return [dataclasses.replace(p, skip_reason=OPTED_OUT, send_at=None)
            if p.to in suppressed and not p.skip_reason else p for p in planned]


def _footer(cfg: Config, region: str | None) -> str | None:
    footers = cfg.policy.categories["marketing"].footers
    text = footers.get(region or "", footers.get("default"))
    if region == "CN" and text is not None and not (
            CN_SIGNATURE.search(text) and CN_OPT_OUT.search(text)):
        return None
    return text


def _schedule(message: PlannedMessage, rule: Rule, cfg: Config, now: float) -> PlannedMessage:
    zones = _zones(cfg, message.to)
    due, why = now, []
    if rule.send.delay:
        due += rule.send.delay
        why.append(f"rule delay {rule.send.delay:g}s")
    if rule.send.at is not None:
        due = next_clock(rule.send.at, zones[0], due)
        why.append(f"rule time {rule.send.at // 60:02d}:{rule.send.at % 60:02d}")
    expires = None if rule.send.expires_after is None else due + rule.send.expires_after
    windows = windows_for(cfg, message.category, message.region, message.to)
    opening = next_opening(windows, zones, due) if windows else due
    if opening is None or (expires is not None and opening > expires):
        return dataclasses.replace(message, skip_reason=(
            f"outside the {message.category} window ({describe(windows)}) until past "
            f"expires_after"))
    if opening > due:
        why.append(f"{message.category} window {describe(windows)} "
                   f"({', '.join(z.key for z in zones)})")
    if opening <= now:
        return dataclasses.replace(message, expires_at=expires)
    return dataclasses.replace(message, send_at=opening, expires_at=expires,
                               wait_reason=f"deferred to {_local(opening, zones[0])}: "
                               + "; ".join(why))


def _local(epoch: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch, zone).strftime("%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True, slots=True)
class Waiting:
    """A claimed message as the policy sees it before the send."""

    id: int
    to: str
    rule: str
    category: str
    priority: int
    region: str | None
    expires_at: float | None
    cost: float


@dataclass(frozen=True, slots=True)
class SendFacts:
    """What the outbox says about a message's recipient and the traffic, at send time."""

    suppressed: bool
    guard_tripped: bool
    sent_to_recipient: Sequence[float]  # send times, any category
    sent_in_category: Sequence[float]
    reserved_budget: Sequence[float]  # due times of higher-priority waiting messages
    reserved_category: Sequence[float]
    guard: GuardFacts
    sent_by_rule: Sequence[float] = ()  # send times of this rule's messages to the recipient


def decide(message: Waiting, facts: SendFacts, cfg: Config, now: float) -> Decision:
    """Whether a due message goes now; checked by the sender right before each send."""
    if facts.suppressed:
        return Decision(Verdict.SKIP, OPTED_OUT)
    if message.expires_at is not None and now > message.expires_at:
        return Decision(Verdict.EXPIRE, "past its rule's expires_after")
    if facts.guard_tripped:
        return Decision(Verdict.HOLD, "the fraud guard is tripped: held for review")
    windows = windows_for(cfg, message.category, message.region, message.to)
    if windows:
        opening = next_opening(windows, _zones(cfg, message.to), now)
        if opening is None or opening > now:
            return _later(message, opening, f"{message.category} window {describe(windows)}")
    caps = cfg.policy.categories[message.category].caps
    # One rule's messages share its priority: none reserves a slot against another.
    for limits, sent, reserved, what in (
            (rule_caps(cfg, message.rule), facts.sent_by_rule, (), f"rule {message.rule} cap"),
            (caps, facts.sent_in_category, facts.reserved_category, f"{message.category} cap"),
            (cfg.policy.budget, facts.sent_to_recipient, facts.reserved_budget,
             "contact budget")):
        wait = cap_wait(limits, sent, reserved, now)
        if wait is not None:
            return _later(message, wait[0], f"{what} {describe_cap(wait[1])} reached")
    trip = guard_trip(cfg.policy.guard, facts.guard, message.cost)
    if trip is not None:
        return Decision(Verdict.HOLD, f"fraud guard tripped: {trip}")
    return SEND_NOW


def rule_caps(cfg: Config, name: str) -> tuple[Cap, ...]:
    """The caps of rule `name` (none once a reload removed the rule)."""
    return next((r.send.caps for r in cfg.rules if r.name == name), ())


def _later(message: Waiting, at: float | None, why: str) -> Decision:
    if at is None or (message.expires_at is not None and at > message.expires_at):
        return Decision(Verdict.EXPIRE, f"{why}; no chance before expires_after")
    return Decision(Verdict.SEND_AT, why, at)


@dataclass(frozen=True, slots=True)
class Cancellable:
    """A waiting message whose rule cancels it when the customer is reached."""

    id: int
    to: str
    call_ended_at: float


def cancellations(call: CompletedCall, customer_e164: str | None,
                  waiting: Sequence[Cancellable]) -> list[tuple[int, str]]:
    """(message id, reason) of each waiting message `call` makes pointless.

    A later answered call with the same customer, inbound (they got through) or outbound
    (they were called back), means they were reached: a missed-call text would be wrong.
    """
    if not call.answered or customer_e164 is None:
        return []
    reason = (f"cancelled: the customer was reached by a later answered {call.direction} "
              f"call ({call.linkedid})")
    return [(w.id, reason) for w in waiting
            if w.to == customer_e164 and w.call_ended_at <= call.ended_at]


def with_incident(body: str, notice: str | None, replace: bool) -> str:
    """The text to send while an incident notice is on (appended once, or replacing)."""
    if not notice:
        return body
    if replace:
        return notice
    return body if body.endswith(notice) else f"{body}\n{notice}"
