"""Per-recipient caps and budget (with priorities), and the fraud guard's thresholds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hangupsms.settings import Cap, GuardConfig


def cap_wait(caps: Sequence[Cap], sent: Sequence[float], reserved: Sequence[float],
             now: float) -> tuple[float, Cap] | None:
    """None when one more message fits every cap; else (when a slot frees, the cap that binds).

    `sent` are the send times of messages already sent to the recipient; `reserved` the due
    times of higher-priority messages waiting for the same recipient: within a cap's period
    they hold a slot, so a lower-priority message cannot take the last one from them.
    """
    worst: tuple[float, Cap] | None = None
    for cap in caps:
        used = sorted(t for t in sent if now - cap.per < t <= now)
        held = sum(1 for t in reserved if t < now + cap.per)
        over = len(used) + held + 1 - cap.max
        if over <= 0:
            continue
        # The `over` oldest sends must leave the period; if reservations alone fill the cap,
        # a full period must pass.
        free = used[over - 1] + cap.per if over <= len(used) else now + cap.per
        if worst is None or free > worst[0]:
            worst = (free, cap)
    return worst


def describe_cap(cap: Cap) -> str:
    return f"{cap.max} per {describe_duration(cap.per)}"


def describe_duration(seconds: float) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class GuardFacts:
    """What was sent in the last hour and day (since the last release), for the guard."""

    prefix: str  # "+" and the first `prefix_digits` digits of the destination
    prefix_hour: int
    hour: int
    day: int
    hour_cost: float
    day_cost: float


def guard_trip(cfg: GuardConfig, facts: GuardFacts, cost: float) -> str | None:
    """Why sending one more message (costing `cost`) would pass a guard limit, or None."""
    if facts.prefix_hour + 1 > cfg.per_prefix_hour:
        return (f"{facts.prefix_hour} messages to prefix {facts.prefix} in the last hour "
                f"(limit {cfg.per_prefix_hour})")
    if facts.hour + 1 > cfg.hourly:
        return f"{facts.hour} messages in the last hour (limit {cfg.hourly})"
    if facts.day + 1 > cfg.daily:
        return f"{facts.day} messages in the last day (limit {cfg.daily})"
    if cfg.hourly_cost is not None and facts.hour_cost + cost > cfg.hourly_cost:
        return f"cost {facts.hour_cost + cost:.2f} in the last hour (limit {cfg.hourly_cost:g})"
    if cfg.daily_cost is not None and facts.day_cost + cost > cfg.daily_cost:
        return f"cost {facts.day_cost + cost:.2f} in the last day (limit {cfg.daily_cost:g})"
    return None


def destination_prefix(number: str, digits: int) -> str:
    """`+` and the first `digits` digits: country code and the start of the range."""
    return "+" + number.lstrip("+")[:digits]


def price(prices: Mapping[str, float], region: str | None, segments: int) -> float:
    """Segments times the configured price for the region (or `default`; 0 when unpriced)."""
    return prices.get(region or "", prices.get("default", 0.0)) * segments
