"""Policy decisions, pure, on a controllable clock: categories, windows, caps, budget, guard."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hangupsms.config import Config, ConfigError
from hangupsms.planner import plan
from hangupsms.policy import (
    OPTED_OUT,
    Cancellable,
    SendFacts,
    Verdict,
    Waiting,
    cancellations,
    decide,
    suppress,
    with_incident,
)
from hangupsms.policy.limits import GuardFacts, cap_wait
from hangupsms.render import Renderer
from hangupsms.settings import Cap
from tests.policylab import FRENCH_MOBILE, build, only_call, reference_with, rule

PARIS, NEW_YORK = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")
HOUR, DAY = 3600.0, 86_400.0
QUIET = GuardFacts("+336123", 0, 0, 0, 0.0, 0.0)


def at(text: str, zone: ZoneInfo) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def marketing_config(tmp_path: Path, **policy: Any) -> Config:
    """c.ami's missed-call rule turned into a marketing text to a French mobile."""
    raw = reference_with()
    raw["templates"]["missed"] = {"text": raw["templates"]["missed"], "category": "marketing"}
    raw["policy"] = {"categories": {"marketing": {"footers": {"default": "STOP au 36180"}}},
                     "prices": {"default": 0.05, "FR": 0.07}, **policy}
    return build(raw, tmp_path)


def waiting(**fields: Any) -> Waiting:
    base = Waiting(1, FRENCH_MOBILE, "missed", "service", 0, "FR", None, 0.07)
    return dataclasses.replace(base, **fields)


def facts(**fields: Any) -> SendFacts:
    base = SendFacts(False, False, (), (), (), (), QUIET)
    return dataclasses.replace(base, **fields)


def test_a_marketing_text_carries_the_footer_and_its_price(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)
    call = only_call(cfg, "c")
    noon = at("2026-12-07T12:00", PARIS)
    (missed, _alert) = plan(call, cfg, Renderer.from_config(cfg), now=noon)
    assert missed.category == "marketing" and missed.region == "FR"
    assert missed.body is not None and missed.body.text.endswith("\nSTOP au 36180")
    assert missed.cost == pytest.approx(0.07 * missed.body.segments)
    assert missed.send_at is None and missed.skip_reason is None


def test_a_marketing_text_at_night_waits_for_the_morning_in_the_recipient_zone(
        tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)
    late = at("2026-12-07T22:30", PARIS)
    missed, alert = plan(only_call(cfg, "c"), cfg, Renderer.from_config(cfg), now=late)
    assert missed.send_at == at("2026-12-08T08:00", PARIS)
    assert missed.wait_reason is not None and "Europe/Paris" in missed.wait_reason
    assert alert.category == "service" and alert.send_at is None  # service: any time


def test_a_marketing_text_past_expires_after_before_the_morning_is_skipped(
        tmp_path: Path) -> None:
    raw = reference_with()
    raw["templates"]["missed"] = {"text": "Sorry!", "category": "marketing"}
    rule(raw, "missed")["send"]["expires_after"] = "2h"
    raw["policy"] = {"categories": {"marketing": {"footers": {"default": "STOP au 36180"}}}}
    cfg = build(raw, tmp_path)
    missed, _ = plan(only_call(cfg, "c"), cfg, Renderer.from_config(cfg),
                     now=at("2026-12-07T22:30", PARIS))
    assert missed.skip_reason is not None and "expires_after" in missed.skip_reason


def test_a_rule_delay_and_time_schedule_the_message(tmp_path: Path) -> None:
    raw = reference_with()
    rule(raw, "missed")["send"].update(after="7d", at="09:30")
    rule(raw, "missed-alert")["send"]["delay"] = "30s"
    cfg = build(raw, tmp_path)
    noon = at("2026-12-07T12:00", PARIS)
    missed, alert = plan(only_call(cfg, "c"), cfg, Renderer.from_config(cfg), now=noon)
    assert missed.send_at == at("2026-12-15T09:30", PARIS)  # 7 days on, the next 09:30
    assert alert.send_at == noon + 30
    assert alert.wait_reason is not None and "delay 30s" in alert.wait_reason


def test_marketing_without_a_footer_is_a_config_error(tmp_path: Path) -> None:
    raw = reference_with()
    raw["templates"]["missed"] = {"text": "Sorry!", "category": "marketing"}
    with pytest.raises(ConfigError, match=r"footers\.default"):
        build(raw, tmp_path)


def test_a_cn_footer_needs_a_signature_and_an_opt_out(tmp_path: Path) -> None:
    raw = reference_with()
    raw["policy"] = {"categories": {"marketing": {"footers": {"CN": "Reply STOP"}}}}
    with pytest.raises(ConfigError, match="【signature】") as error:
        build(raw, tmp_path)
    assert error.value.path == "policy.categories.marketing.footers.CN"
    raw["policy"] = {"categories": {"marketing": {"footers": {"CN": "【Acme】回T退订"}}}}
    assert build(raw, tmp_path).policy.categories["marketing"].footers["CN"] == "【Acme】回T退订"


def test_marketing_to_china_with_only_an_english_footer_is_skipped(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)
    cfg = dataclasses.replace(cfg, phone=dataclasses.replace(
        cfg.phone, allowed_regions=(), default_region="CN"))
    call = only_call(cfg, "b")  # Bob, 13800138000: a Chinese mobile read in region CN
    missed = plan(call, cfg, Renderer.from_config(cfg), now=at("2026-12-07T12:00", PARIS))[0]
    assert missed.to == "+8613800138000"
    assert missed.skip_reason == "marketing to CN: no footer with a 【signature】 and opt-out"


def test_suppressed_numbers_are_skipped_at_planning(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)
    planned = plan(only_call(cfg, "c"), cfg, Renderer.from_config(cfg))
    missed, alert = suppress(planned, frozenset({FRENCH_MOBILE}))
    assert missed.skip_reason == OPTED_OUT and alert.skip_reason is None


def test_the_sender_skips_a_number_suppressed_while_it_waited(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)
    decision = decide(waiting(), facts(suppressed=True), cfg, 0.0)
    assert (decision.verdict, decision.reason) == (Verdict.SKIP, OPTED_OUT)


def test_past_expires_after_the_sender_expires_it(tmp_path: Path) -> None:
    decision = decide(waiting(expires_at=100.0), facts(), marketing_config(tmp_path), 101.0)
    assert decision.verdict is Verdict.EXPIRE


def test_the_sender_defers_a_marketing_text_that_became_due_at_night(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)
    night = at("2026-12-07T23:00", PARIS)
    decision = decide(waiting(category="marketing"), facts(), cfg, night)
    assert decision.verdict is Verdict.SEND_AT
    assert decision.at == at("2026-12-08T08:00", PARIS)


def test_us_marketing_uses_the_recipient_time_not_the_configured_one(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)  # timezone: Europe/London
    us = waiting(category="marketing", to="+12125550100", region="US")
    london_morning = at("2026-12-07T09:00", ZoneInfo("Europe/London"))  # 04:00 in New York
    decision = decide(us, facts(), cfg, london_morning)
    assert decision.at == at("2026-12-07T08:00", NEW_YORK)


def test_marketing_caps_defer_the_second_text_of_the_day(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)  # default marketing caps: 1 per 24h, 3 per 7d
    noon = at("2026-12-07T12:00", PARIS)
    one_sent = facts(sent_in_category=(noon - HOUR,), sent_to_recipient=(noon - HOUR,))
    decision = decide(waiting(category="marketing"), one_sent, cfg, noon)
    assert decision.verdict is Verdict.SEND_AT and decision.at == noon - HOUR + DAY
    assert "marketing cap 1 per 1d" in decision.reason
    # Service messages have no caps by default.
    assert decide(waiting(), one_sent, cfg, noon).verdict is Verdict.SEND_NOW


def test_a_budget_shared_by_three_competing_rules_goes_to_the_highest_priorities(
        tmp_path: Path) -> None:
    """Three rules want the same recipient on one day; the budget allows two."""
    cfg = marketing_config(tmp_path, budget=[{"max": 2, "per": "24h"}])
    now = at("2026-12-07T12:00", PARIS)
    rules = {"survey": 1, "thanks": 5, "appointment": 10}  # name -> priority
    due = {name: now for name in rules}
    sent: list[float] = []
    outcomes: dict[str, Verdict] = {}
    # The lowest priority comes first: it must leave the two slots to the others.
    for name in sorted(rules, key=rules.get):  # type: ignore[arg-type]
        others = [due[o] for o in rules if rules[o] > rules[name] and o not in outcomes]
        message = waiting(rule=name, priority=rules[name], expires_at=now + HOUR)
        decision = decide(message, facts(sent_to_recipient=tuple(sent),
                                         reserved_budget=tuple(others)), cfg, now)
        outcomes[name] = decision.verdict
        if decision.verdict is Verdict.SEND_NOW:
            sent.append(now)
    assert outcomes == {"survey": Verdict.EXPIRE, "thanks": Verdict.SEND_NOW,
                        "appointment": Verdict.SEND_NOW}


def test_without_expiry_a_message_over_budget_waits_for_a_free_slot() -> None:
    caps = (Cap(2, DAY),)
    assert cap_wait(caps, [100.0, 200.0], [], 300.0) == (100.0 + DAY, caps[0])
    assert cap_wait(caps, [100.0], [], 300.0) is None
    # A higher-priority message due within the period holds the last slot.
    assert cap_wait(caps, [100.0], [400.0], 300.0) == (100.0 + DAY, caps[0])
    assert cap_wait(caps, [100.0], [300.0 + DAY], 300.0) is None


def test_the_guard_holds_the_send_that_would_pass_a_prefix_limit(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path, guard={"per_prefix_hour": 5})
    busy = dataclasses.replace(QUIET, prefix_hour=5)
    decision = decide(waiting(), facts(guard=busy), cfg, 0.0)
    assert decision.verdict is Verdict.HOLD
    assert "5 messages to prefix +336123 in the last hour (limit 5)" in decision.reason
    assert decide(waiting(), facts(guard=dataclasses.replace(QUIET, prefix_hour=4)), cfg,
                  0.0).verdict is Verdict.SEND_NOW


def test_the_guard_counts_cost_and_holds_everything_once_tripped(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path, guard={"daily_cost": 10})
    spent = dataclasses.replace(QUIET, day_cost=9.95)
    decision = decide(waiting(cost=0.07), facts(guard=spent), cfg, 0.0)
    assert decision.verdict is Verdict.HOLD and "cost 10.02 in the last day" in decision.reason
    assert decide(waiting(), facts(guard_tripped=True), cfg, 0.0).verdict is Verdict.HOLD


def test_a_later_answered_call_cancels_the_waiting_missed_call_text(tmp_path: Path) -> None:
    """c.ami is a missed call from +33612345678; a.ami answered, replayed from that number."""
    raw = reference_with()
    rule(raw, "missed")["send"]["delay"] = "10m"
    cfg = build(raw, tmp_path)
    missed_call = only_call(cfg, "c")
    missed = plan(missed_call, cfg, Renderer.from_config(cfg), now=missed_call.ended_at)[0]
    assert missed.cancel_if_answered and missed.send_at == missed_call.ended_at + 600
    waiting_text = Cancellable(7, missed.to, missed_call.ended_at)
    callback = only_call(cfg, "a", number=FRENCH_MOBILE, shift=3600)  # an hour later
    assert callback.answered and callback.customer_number == FRENCH_MOBILE
    (cancelled,) = cancellations(callback, FRENCH_MOBILE, [waiting_text])
    assert cancelled[0] == 7 and callback.linkedid in cancelled[1]
    # The same answered call before the missed one changes nothing.
    earlier = only_call(cfg, "a", number=FRENCH_MOBILE)
    assert cancellations(earlier, FRENCH_MOBILE, [waiting_text]) == []
    # Nor does an unanswered call, or an answered one from someone else.
    assert cancellations(missed_call, FRENCH_MOBILE, [waiting_text]) == []
    assert cancellations(callback, "+447700900123", [waiting_text]) == []


def test_only_rules_for_unanswered_calls_cancel_by_default(tmp_path: Path) -> None:
    cfg = build(reference_with(), tmp_path)
    flags = {r.name: r.send.cancel_if_answered for r in cfg.rules}
    # The manager's alert is not about reaching the customer: it stays.
    assert flags == {"appointment": False, "thanks": False, "missed": True,
                     "missed-alert": False, "outbound-followup": False}


def test_an_incident_notice_is_appended_once_or_replaces() -> None:
    notice = "Flights from LHR are cancelled today."
    appended = with_incident("Your booking ABC is confirmed.", notice, False)
    assert appended == f"Your booking ABC is confirmed.\n{notice}"
    assert with_incident(appended, notice, False) == appended  # a retry adds it once
    assert with_incident("Your booking ABC is confirmed.", notice, True) == notice
    assert with_incident("text", None, False) == "text"


def test_stricter_us_states_close_earlier_than_the_federal_window(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path)
    eight_thirty = at("2026-12-07T20:30", NEW_YORK)  # Monday, Eastern time
    florida = waiting(category="marketing", to="+13055550100", region="US")
    new_york = waiting(category="marketing", to="+12125550100", region="US")
    assert decide(new_york, facts(), cfg, eight_thirty).verdict is Verdict.SEND_NOW
    held = decide(florida, facts(), cfg, eight_thirty)
    assert held.verdict is Verdict.SEND_AT and held.at == at("2026-12-08T08:00", NEW_YORK)
    # Texas: not before noon on a Sunday (Central time).
    texas = waiting(category="marketing", to="+15125550100", region="US")
    sunday_morning = at("2026-12-06T10:00", ZoneInfo("America/Chicago"))
    assert decide(texas, facts(), cfg, sunday_morning).at == \
        at("2026-12-06T12:00", ZoneInfo("America/Chicago"))


def test_a_state_window_can_be_configured(tmp_path: Path) -> None:
    cfg = marketing_config(tmp_path, categories={"marketing": {
        "footers": {"default": "STOP"},
        "windows": {"US-NY": {"from": "10:00", "to": "11:00"}}}})
    new_york = waiting(category="marketing", to="+12125550100", region="US")
    decision = decide(new_york, facts(), cfg, at("2026-12-07T12:00", NEW_YORK))
    assert decision.at == at("2026-12-08T10:00", NEW_YORK)


def test_a_burst_of_calls_from_premium_numbers_plans_no_message(tmp_path: Path) -> None:
    """c.ami copied 200 times from premium-rate numbers (+44 909 …): all recorded, none due."""
    raw = reference_with()
    raw["phone"]["allowed_regions"] = []  # even with every region allowed
    cfg = build(raw, tmp_path)
    renderer = Renderer.from_config(cfg)
    missed = only_call(cfg, "c")
    for index in range(200):
        call = dataclasses.replace(missed, linkedid=f"p{index}",
                                   customer_number=f"+449091234{index:03d}")
        customer = [p for p in plan(call, cfg, renderer) if p.recipient == "customer"]
        assert [p.skip_reason for p in customer] == [
            f"customer number '+449091234{index:03d}' is not textable: premium-rate number"]
