"""The `policy:` section and the policy keys of rules: defaults, and errors with key and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hangupsms.config import ConfigError, parse_config
from hangupsms.settings import DAY, WEEK, Cap, TimeWindow
from tests.policylab import build, reference_with, rule


def error_for(raw: dict[str, Any]) -> tuple[ConfigError, str]:
    text = yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "p.yaml")
    return caught.value, text


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_without_a_policy_section_the_defaults_follow_the_rules(tmp_path: Path) -> None:
    policy = build(reference_with(), tmp_path).policy
    marketing = policy.categories["marketing"]
    daytime = (TimeWindow(frozenset(range(7)), 8 * 60, 21 * 60),)
    assert {k: marketing.windows[k] for k in ("default", "US", "CN")} == {
        "default": daytime, "US": daytime, "CN": daytime}
    assert set(marketing.windows) - {"default", "US", "CN"} == {
        "US-FL", "US-OK", "US-MD", "US-WA", "US-TX"}  # the stricter states
    assert marketing.caps == (Cap(1, DAY), Cap(3, WEEK))
    assert policy.categories["service"].windows == {} and policy.budget == ()
    assert policy.recipient_timezone


def test_given_windows_merge_per_region_over_the_defaults(tmp_path: Path) -> None:
    raw = reference_with(policy={"categories": {"marketing": {
        "windows": {"us": {"days": ["sat"], "from": "10:00", "to": "12:00"}},
        "caps": [], "footers": {"default": "STOP"}}}})
    marketing = build(raw, tmp_path).policy.categories["marketing"]
    assert marketing.windows["US"] == (TimeWindow(frozenset({5}), 600, 720),)
    assert marketing.windows["CN"][0].start_minute == 8 * 60
    assert marketing.caps == ()


def test_rule_timing_keys_are_read(tmp_path: Path) -> None:
    raw = reference_with()
    rule(raw, "thanks").update(priority=-2)
    rule(raw, "thanks")["send"].update(after="1w", at="09:30", expires_after="90m",
                                       cancel_if_answered=True)
    thanks = next(r for r in build(raw, tmp_path).rules if r.name == "thanks")
    assert thanks.priority == -2
    assert (thanks.send.delay, thanks.send.at, thanks.send.expires_after) == (WEEK, 570, 5400)
    assert thanks.send.cancel_if_answered


@pytest.mark.parametrize(("change", "path", "needle", "message"), [
    (lambda raw: raw.update(policy={"categories": {"promo": {}}}),
     "policy.categories.promo", "promo:", "unknown category 'promo'"),
    (lambda raw: rule(raw, "thanks")["send"].update(delay="soon"),
     "rules[1].send.delay", "delay:", "expected a duration"),
    (lambda raw: rule(raw, "thanks")["send"].update(delay="1m", after="1d"),
     "rules[1].send.after", "after:", "give 'delay' or 'after', not both"),
    (lambda raw: raw.update(policy={"prices": {"XX": 0.1}}),
     "policy.prices.XX", "XX:", "unknown region code 'XX'"),
    (lambda raw: raw.update(policy={"prices": {"US-FL": 0.1}}),
     "policy.prices.US-FL", "US-FL:", "unknown region code 'US-FL'"),
    (lambda raw: raw.update(policy={"categories": {"marketing": {"windows": {
        "US-XX": {"from": "09:00", "to": "10:00"}}}}}),
     "policy.categories.marketing.windows.US-XX", "US-XX:", "a US state such as US-FL"),
    (lambda raw: raw.update(policy={"guard": {"per_prefix_hour": 0}}),
     "policy.guard.per_prefix_hour", "per_prefix_hour:", "must be at least 1"),
    (lambda raw: raw.update(policy={"budget": [{"per": "1d"}]}),
     "policy.budget[0].max", "per:", "missing (required)"),
    (lambda raw: raw["templates"].update(promo={"text": "x", "category": "promo"}),
     "templates.promo.category", "category:", "unknown category 'promo'"),
    (lambda raw: rule(raw, "thanks")["send"].update(at="9.30"),
     "rules[1].send.at", "at:", 'expected a time of day as "HH:MM"'),
])
def test_policy_errors_name_the_key_and_line(change: Any, path: str, needle: str,
                                             message: str) -> None:
    raw = reference_with()
    change(raw)
    error, text = error_for(raw)
    assert error.path == path
    assert message in error.message
    assert error.line == line_of(text, needle)


def test_marketing_to_an_allowed_cn_needs_a_cn_footer() -> None:
    raw = reference_with(policy={"categories": {"marketing": {
        "footers": {"default": "Reply STOP to opt out"}}}})
    raw["phone"]["allowed_regions"] = ["GB", "CN"]
    raw["templates"]["thanks"] = {"text": "Hello", "category": "marketing"}
    error, _ = error_for(raw)
    assert "footers.CN" in error.message
