"""The `policy:` section and the policy keys of rules: categories, windows, caps, the guard."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

import phonenumbers

from hangupsms.settings import (
    CATEGORIES,
    Cap,
    CategoryPolicy,
    GuardConfig,
    PolicyConfig,
    TemplateConfig,
    TimeWindow,
    default_policy,
)
from hangupsms.usstates import CODES
from hangupsms.yamlnodes import At, NodeReader

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 7 * 86_400.0}
_POLICY_KEYS = ("categories", "budget", "guard", "prices", "recipient_timezone")
GUARD_BOUNDS = {"prefix_digits": (1, 15), "per_prefix_hour": (1, None), "hourly": (1, None),
                 "daily": (1, None)}
# China's rules for marketing texts: a 【signature】 and an opt-out instruction.
CN_SIGNATURE = re.compile(r"【[^】]+】")
CN_OPT_OUT = re.compile(r"退订|回复\s*R|回\s*R")

WindowReader = Callable[[NodeReader, At], tuple[TimeWindow, ...]]


def duration(reader: NodeReader, at: At) -> float:
    """Seconds from `90`, `30s`, `5m`, `2h`, `7d` or `1w`."""
    text = reader.text(at).strip().lower()
    found = _DURATION.fullmatch(text)
    if found is None:
        raise reader.error(at, f"expected a duration such as 30s, 5m, 2h or 7d, got {text!r}")
    return float(found[1]) * _UNITS[found[2]]


def read_policy(reader: NodeReader, at: At | None, windows: WindowReader) -> PolicyConfig:
    """`policy:` over the defaults; a category's windows and footers merge per region."""
    base = default_policy()
    if at is None:
        return base
    nodes = reader.mapping(at, _POLICY_KEYS)
    categories = dict(base.categories)
    for name, item in reader.entries(nodes["categories"]) if "categories" in nodes else ():
        if name not in CATEGORIES:
            raise reader.error(item, f"unknown category '{name}'; expected one of: "
                               + ", ".join(CATEGORIES))
        categories[name] = _category(reader, item, categories[name], windows)
    guard = GuardConfig()
    if "guard" in nodes:
        guard_nodes = reader.mapping(nodes["guard"], tuple(
            f.name for f in dataclasses.fields(GuardConfig)))
        guard = reader.fill(guard_nodes, GuardConfig, GUARD_BOUNDS)
    prices = {_region_key(reader, k, v): reader.number(v)
              for k, v in (reader.entries(nodes["prices"]) if "prices" in nodes else ())}
    return PolicyConfig(
        categories=MappingProxyType(categories),
        budget=caps(reader, nodes["budget"]) if "budget" in nodes else (),
        guard=guard, prices=MappingProxyType(prices),
        recipient_timezone=(reader.flag(nodes["recipient_timezone"])
                            if "recipient_timezone" in nodes else True),
    )


def _category(reader: NodeReader, at: At, base: CategoryPolicy,
              windows: WindowReader) -> CategoryPolicy:
    nodes = reader.mapping(at, ("windows", "footers", "caps"))
    merged_windows = dict(base.windows)
    for key, item in reader.entries(nodes["windows"]) if "windows" in nodes else ():
        merged_windows[_region_key(reader, key, item, states=True)] = windows(reader, item)
    footers = dict(base.footers)
    for key, item in reader.entries(nodes["footers"]) if "footers" in nodes else ():
        region = _region_key(reader, key, item)
        footers[region] = reader.text(item).strip()
        if region == "CN":
            _check_cn_footer(reader, item, footers[region])
    return CategoryPolicy(
        name=base.name, windows=MappingProxyType(merged_windows),
        footers=MappingProxyType(footers),
        caps=caps(reader, nodes["caps"]) if "caps" in nodes else base.caps,
    )


def _check_cn_footer(reader: NodeReader, at: At, text: str) -> None:
    if not CN_SIGNATURE.search(text) or not CN_OPT_OUT.search(text):
        raise reader.error(at, "a footer for CN needs a 【signature】 and an opt-out "
                           "instruction such as 回T退订 or 拒收请回复R")


def _region_key(reader: NodeReader, key: str, at: At, *, states: bool = False) -> str:
    """`default`, a region (`US`) or, where `states`, a US state (`US-FL`)."""
    if key == "default":
        return key
    code = key.upper()
    if code in phonenumbers.SUPPORTED_REGIONS or (
            states and code.startswith("US-") and code[3:] in CODES):
        return code
    example = "US, CN, or a US state such as US-FL" if states else "US, CN"
    raise reader.error(at, f"unknown region code '{key}' (ISO 3166, e.g. {example}) "
                       "or 'default'")


def caps(reader: NodeReader, at: At) -> tuple[Cap, ...]:
    """`[{max: 1, per: 24h}, {max: 3, per: 7d}]` (one mapping alone is accepted too)."""
    out: list[Cap] = []
    for item in reader.items(at):
        nodes = reader.mapping(item, ("max", "per"), ("max", "per"))
        out.append(Cap(reader.integer(nodes["max"], 0), duration(reader, nodes["per"])))
    return tuple(out)


def check_marketing(reader: NodeReader, at: At, policy: PolicyConfig,
                    templates: Mapping[str, TemplateConfig], used: set[str],
                    allowed_regions: tuple[str, ...]) -> None:
    """A marketing template in use needs a footer for every region it may go to."""
    marketing = [name for name in sorted(used) if templates[name].category == "marketing"]
    if not marketing:
        return
    footers = policy.categories["marketing"].footers
    if "default" not in footers and not (
            allowed_regions and all(r in footers for r in allowed_regions)):
        raise reader.error(at, f"template '{marketing[0]}' is marketing: set "
                           "policy.categories.marketing.footers.default (an opt-out "
                           "instruction such as 'Reply STOP to opt out')")
    if "CN" in allowed_regions and "CN" not in footers:
        raise reader.error(at, f"template '{marketing[0]}' is marketing and CN is allowed: "
                           "set policy.categories.marketing.footers.CN (【signature】 and "
                           "回T退订 or 拒收请回复R)")
