"""Send windows in the recipient's time: is one open now, and when does the next one open."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_timezone

from hangupsms.rules import in_windows
from hangupsms.settings import TimeWindow

_UNKNOWN_ZONE = "Etc/Unknown"
_SEARCH_DAYS = 9  # any weekly window opens within 8 days of any moment


@lru_cache(maxsize=4096)
def recipient_zones(e164: str | None, fallback: str,
                    from_number: bool = True) -> tuple[ZoneInfo, ...]:
    """The zones the number may be in (libphonenumber's geocoding), else `fallback`.

    A number spanning several zones (a US mobile area code, a whole country) yields all of
    them: a window must then be open in each, the strict reading of "recipient time".
    """
    if from_number and e164:
        try:
            names = number_timezone.time_zones_for_number(phonenumbers.parse(e164))
        except phonenumbers.NumberParseException:
            names = ()
        zones = tuple(ZoneInfo(name) for name in sorted(set(names)) if name != _UNKNOWN_ZONE)
        if zones:
            return zones
    return (ZoneInfo(fallback),)


def is_open(windows: Sequence[TimeWindow], zones: Sequence[ZoneInfo], epoch: float) -> bool:
    """Whether `epoch` is inside `windows` in every one of `zones`."""
    return all(in_windows(windows, epoch, zone) for zone in zones)


def next_opening(windows: Sequence[TimeWindow], zones: Sequence[ZoneInfo],
                 epoch: float) -> float | None:
    """`epoch` when the windows are open then, else the first moment they are (None: never).

    An opening shared by every zone starts at some zone's local opening time, so those
    instants are the only candidates; local times are resolved per day, DST included.
    """
    if is_open(windows, zones, epoch):
        return epoch
    candidates = sorted({
        start for zone in zones for window in windows
        for start in _local_starts(window, zone, epoch) if start > epoch
    })
    return next((c for c in candidates if is_open(windows, zones, c)), None)


def _local_starts(window: TimeWindow, zone: ZoneInfo, epoch: float) -> list[float]:
    today = datetime.fromtimestamp(epoch, zone).date()
    hour, minute = divmod(window.start_minute, 60)
    starts = []
    for offset in range(-1, _SEARCH_DAYS):
        day = today + timedelta(days=offset)
        if day.weekday() in window.days:
            starts.append(_resolve(datetime.combine(day, time(hour, minute), zone)))
    return starts


def _resolve(local: datetime) -> float:
    """A local wall time as epoch (fold 0, PEP 495): a time a DST jump skipped maps to just
    after the jump (01:30 on the spring-forward night is 02:30 summer time), a repeated one
    to its first occurrence."""
    return local.timestamp()


def next_clock(minute: int, zone: ZoneInfo, epoch: float) -> float:
    """The first moment at or after `epoch` when the clock in `zone` shows `minute`."""
    today = datetime.fromtimestamp(epoch, zone).date()
    hour, minutes = divmod(minute, 60)
    for offset in range(3):
        candidate = _resolve(datetime.combine(today + timedelta(days=offset),
                                              time(hour, minutes), zone))
        if candidate >= epoch:
            return candidate
    raise AssertionError("a clock time recurs within two days")


def describe(windows: Sequence[TimeWindow]) -> str:
    """`mon-sun 08:00-21:00` style text for `check` and reasons."""
    return ", ".join(f"{_days(w.days)} {_hhmm(w.start_minute)}-{_hhmm(w.end_minute)}"
                     for w in windows)


_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _days(days: frozenset[int]) -> str:
    if days == frozenset(range(7)):
        return "every day"
    return ",".join(_NAMES[d] for d in sorted(days))


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
