"""Which numbers may be texted, and their E.164 form."""

from __future__ import annotations

import pytest

from hangupsms.config import PhoneConfig
from hangupsms.phone import NumberCheck, check_number

LAB = PhoneConfig(
    default_region="GB", allowed_regions=("GB", "FR", "DE", "AU"), number_check="possible"
)
STRICT = PhoneConfig(default_region="GB", number_check="valid")


def test_lab_drama_range_number_is_possible_and_gets_region_from_country_code() -> None:
    assert check_number("07700900456", LAB) == NumberCheck(True, "+447700900456", "GB", None)


def test_drama_range_number_is_not_valid_when_valid_numbers_are_required() -> None:
    check = check_number("07700900456", STRICT)
    assert not check.ok
    assert check.reason == "invalid number"


@pytest.mark.parametrize(
    ("raw", "e164", "region"),
    [("+33612345678", "+33612345678", "FR"), ("+61412345678", "+61412345678", "AU")],
)
def test_valid_foreign_mobiles_are_textable(raw: str, e164: str, region: str) -> None:
    for cfg in (LAB, STRICT):
        assert check_number(raw, cfg) == NumberCheck(True, e164, region, None)


def test_chinese_mobile_without_country_code_is_not_a_gb_number() -> None:
    for cfg in (LAB, STRICT):
        check = check_number("13800138000", cfg)
        assert (check.ok, check.e164, check.reason) == (False, None, "invalid number")


@pytest.mark.parametrize("raw", ["anonymous", "Anonymous", "<unknown>", "unknown", "restricted"])
def test_withheld_callers_are_not_numbers(raw: str) -> None:
    assert check_number(raw, LAB) == NumberCheck(False, None, None, "not a number")


@pytest.mark.parametrize("raw", ["12ab34567", "+44 7700 9001x3", "sip:bob@example.com", "++4477"])
def test_junk_is_not_a_number(raw: str) -> None:
    assert check_number(raw, LAB).reason == "not a number"


def test_empty_number_is_refused() -> None:
    assert check_number("  ", LAB) == NumberCheck(False, None, None, "no number")


@pytest.mark.parametrize("raw", ["201", "4000", "123456"])
def test_short_numbers_are_internal_extensions(raw: str) -> None:
    assert check_number(raw, LAB).reason == "internal extension"


def test_extension_length_is_configurable() -> None:
    cfg = PhoneConfig(default_region="GB", number_check="possible", internal_max_digits=3)
    # libphonenumber deems some 4-digit GB numbers possible: the extension rule is what stops them.
    assert check_number("4000", cfg).e164 == "+444000"
    assert check_number("201", cfg).reason == "internal extension"


def test_separators_and_international_prefix_are_read() -> None:
    assert check_number(" +44 (7700) 900-123 ", LAB).e164 == "+447700900123"
    assert check_number("0033 6 12 34 56 78", LAB).e164 == "+33612345678"


def test_region_outside_allowed_list_is_refused_but_still_read() -> None:
    cfg = PhoneConfig(default_region="GB", allowed_regions=("GB",), number_check="valid")
    check = check_number("+33612345678", cfg)
    assert check == NumberCheck(False, "+33612345678", "FR", "region FR not allowed")


def test_empty_allowed_list_allows_every_region() -> None:
    assert check_number("+14155552671", STRICT).ok


def test_premium_rate_is_never_texted() -> None:
    check = check_number("08712345678", PhoneConfig(default_region="GB"))
    assert (check.ok, check.reason) == (False, "premium-rate number")


def test_mobile_only_refuses_a_fixed_line() -> None:
    cfg = PhoneConfig(default_region="GB", number_check="valid", mobile_only=True)
    assert check_number("02079460000", cfg).reason == "not a mobile number"
    assert check_number("+33612345678", cfg).ok


def test_mobile_only_with_possible_check_lets_unknown_type_through() -> None:
    cfg = PhoneConfig(default_region="GB", number_check="possible", mobile_only=True)
    assert check_number("07700900456", cfg).ok
    assert check_number("02079460000", cfg).reason == "not a mobile number"


def test_non_geographic_number_has_no_region_and_fails_a_region_list() -> None:
    check = check_number("+80012345678", LAB)
    assert check.region is None
    assert check.reason == "region unknown not allowed"


def test_shared_cost_is_never_texted() -> None:
    for number in ("+33884012345", "+34901123456"):  # French 0884, Spanish 901
        check = check_number(number, PhoneConfig(default_region="FR"))
        assert (check.ok, check.reason) == (False, "shared-cost number")
