"""Send windows read in the recipient's time: DST changes, midnight wrap-around, zones."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hangupsms.policy.windows import is_open, next_clock, next_opening, recipient_zones
from hangupsms.settings import TimeWindow
from hangupsms.usstates import us_state

EVERY_DAY = frozenset(range(7))
DAYTIME = (TimeWindow(EVERY_DAY, 8 * 60, 21 * 60),)
NEW_YORK, LONDON = ZoneInfo("America/New_York"), ZoneInfo("Europe/London")
UTC = ZoneInfo("UTC")


def at(text: str, zone: ZoneInfo) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def utc(epoch: float | None) -> str:
    assert epoch is not None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def test_opening_after_the_us_spring_forward_is_08_00_daylight_time() -> None:
    # Saturday 2026-03-07 22:00 EST; clocks go forward at 02:00 on Sunday 8 March.
    evening = at("2026-03-07T22:00", NEW_YORK)
    assert not is_open(DAYTIME, (NEW_YORK,), evening)
    assert utc(next_opening(DAYTIME, (NEW_YORK,), evening)) == "2026-03-08 12:00"  # EDT, -4


def test_opening_before_the_us_spring_forward_is_08_00_standard_time() -> None:
    evening = at("2026-03-06T22:00", NEW_YORK)
    assert utc(next_opening(DAYTIME, (NEW_YORK,), evening)) == "2026-03-07 13:00"  # EST, -5


def test_opening_after_the_london_autumn_change_is_08_00_gmt() -> None:
    # Saturday 2026-10-24 22:30 BST; clocks go back at 02:00 on Sunday 25 October.
    evening = at("2026-10-24T22:30", LONDON)
    assert utc(evening) == "2026-10-24 21:30"
    assert utc(next_opening(DAYTIME, (LONDON,), evening)) == "2026-10-25 08:00"


def test_window_closes_at_21_00_local_on_the_day_of_the_change() -> None:
    assert is_open(DAYTIME, (LONDON,), at("2026-10-25T20:59", LONDON))
    assert not is_open(DAYTIME, (LONDON,), at("2026-10-25T21:00", LONDON))


def test_a_window_wrapping_past_midnight_is_open_on_both_sides_of_it() -> None:
    night = (TimeWindow(frozenset({4}), 22 * 60, 2 * 60),)  # Friday 22:00 to Saturday 02:00
    assert is_open(night, (LONDON,), at("2026-12-04T23:30", LONDON))  # Friday
    assert is_open(night, (LONDON,), at("2026-12-05T01:59", LONDON))  # Saturday
    assert not is_open(night, (LONDON,), at("2026-12-05T02:00", LONDON))
    # From Saturday 02:00 the next opening is the following Friday 22:00.
    assert utc(next_opening(night, (LONDON,), at("2026-12-05T02:00", LONDON))) == \
        "2026-12-11 22:00"


def test_a_message_inside_the_window_goes_at_once() -> None:
    noon = at("2026-12-04T12:00", LONDON)
    assert next_opening(DAYTIME, (LONDON,), noon) == noon


def test_after_midnight_the_next_opening_is_the_same_morning() -> None:
    late = at("2026-12-05T00:30", LONDON)
    assert utc(next_opening(DAYTIME, (LONDON,), late)) == "2026-12-05 08:00"


def test_the_recipient_zone_comes_from_the_number_when_it_tells() -> None:
    assert recipient_zones("+12125550100", "Europe/London") == (NEW_YORK,)
    assert recipient_zones("+8613800138000", "Europe/London") == (ZoneInfo("Asia/Shanghai"),)
    # The drama range has no geography: the configured zone applies.
    assert recipient_zones("+447700900123", "Europe/London") == (LONDON,)
    assert recipient_zones("+12125550100", "Europe/London", False) == (LONDON,)


def test_a_number_spanning_zones_waits_until_the_window_is_open_in_all() -> None:
    zones = recipient_zones("+61412345678", "Europe/London")  # an Australian mobile
    assert ZoneInfo("Australia/Perth") in zones and ZoneInfo("Australia/Sydney") in zones
    # 08:00 in Sydney (AEDT, +11) is 05:00 in Perth (+8): Perth is not open yet.
    sydney_morning = at("2026-12-07T08:00", ZoneInfo("Australia/Sydney"))
    opening = next_opening(DAYTIME, zones, sydney_morning)
    assert opening is not None and opening > sydney_morning
    for zone in zones:
        assert is_open(DAYTIME, (zone,), opening)


def test_a_rule_time_is_the_next_such_clock_time_in_the_zone() -> None:
    morning = at("2026-03-07T09:00", NEW_YORK)
    assert utc(next_clock(9 * 60 + 30, NEW_YORK, morning)) == "2026-03-07 14:30"
    evening = at("2026-03-07T10:00", NEW_YORK)
    assert utc(next_clock(9 * 60 + 30, NEW_YORK, evening)) == "2026-03-08 13:30"  # EDT


def test_a_us_number_names_the_state_of_its_area_code() -> None:
    assert us_state("+13055550100") == "FL"  # Miami
    assert us_state("+12125550100") == "NY"  # "New York, NY"
    assert us_state("+12065550123") == "WA"  # "Washington State"
    assert us_state("+14165550100") is None  # Toronto: not the US
    assert us_state("+447700900123") is None
