"""Whether a number Asterisk gave us can be texted, and its E.164 form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import phonenumbers
from phonenumbers import PhoneNumberType

if TYPE_CHECKING:
    from hangupsms.config import PhoneConfig

# What Asterisk and carriers put in CallerIDNum when the caller withheld or has no number.
_WITHHELD = frozenset({"anonymous", "<unknown>", "unknown", "restricted", "private", "unavailable"})
_SEPARATORS = re.compile(r"[\s().\-/]")
_DIALABLE = re.compile(r"\+?[0-9]+")
_NEVER = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate number",
    PhoneNumberType.SHARED_COST: "shared-cost number",
}
_MOBILE = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)
_NO_REGION = ("ZZ", "001")  # unknown; non-geographic (+800, +882 …)


@dataclass(frozen=True, slots=True)
class NumberCheck:
    """The verdict on one number: `e164` is set whenever the number could be read."""

    ok: bool
    e164: str | None
    region: str | None
    reason: str | None


def check_number(raw: str, cfg: PhoneConfig) -> NumberCheck:
    """Reads `raw` as `cfg` says and tells whether it may be texted.

    Withheld values and junk are "not a number"; `cfg.internal_max_digits` digits or fewer
    (without a `+`) are extensions. National numbers are read in `cfg.default_region`.
    `number_check: valid` needs an assigned range, `possible` only a plausible length. Premium
    rate and shared cost are never texted. A number libphonenumber gives no region to (the
    GB drama range 07700 900xxx is "possible" but not "valid") gets its country's main
    region. `mobile_only` refuses any known type but mobile; with `number_check: possible`
    a number of unknown type passes, since "possible" numbers usually have no known type.
    """
    text = _SEPARATORS.sub("", raw.strip())
    if not text:
        return _refuse("no number")
    if text.lower() in _WITHHELD or not _DIALABLE.fullmatch(text):
        return _refuse("not a number")
    if not text.startswith("+") and len(text) <= cfg.internal_max_digits:
        return _refuse("internal extension")
    try:
        number = phonenumbers.parse(text, cfg.default_region)
    except phonenumbers.NumberParseException:
        return _refuse("invalid number")
    readable = (
        phonenumbers.is_valid_number(number)
        if cfg.number_check == "valid"
        else phonenumbers.is_possible_number(number)
    )
    if not readable:
        return _refuse("invalid number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    region = _region(number)
    kind = phonenumbers.number_type(number)
    reason = _refusal(kind, region, cfg)
    return NumberCheck(ok=reason is None, e164=e164, region=region, reason=reason)


def _refusal(kind: int, region: str | None, cfg: PhoneConfig) -> str | None:
    if kind in _NEVER:
        return _NEVER[kind]
    if cfg.allowed_regions and region not in cfg.allowed_regions:
        return f"region {region or 'unknown'} not allowed"
    if cfg.mobile_only and kind not in _MOBILE:
        unknown_allowed = cfg.number_check == "possible" and kind == PhoneNumberType.UNKNOWN
        if not unknown_allowed:
            return "not a mobile number"
    return None


def _region(number: phonenumbers.PhoneNumber) -> str | None:
    region = phonenumbers.region_code_for_number(number)
    if region is None or region in _NO_REGION:
        region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    return None if region in _NO_REGION else region


def _refuse(reason: str) -> NumberCheck:
    return NumberCheck(ok=False, e164=None, region=None, reason=reason)


def region_of(e164: str) -> str | None:
    """The region (ISO 3166) of an E.164 number, or None when it has none."""
    try:
        return _region(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return None
