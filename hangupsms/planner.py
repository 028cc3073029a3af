"""From a completed call to the messages its matching rules want sent (or recorded as skipped)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from hangupsms.config import Config, Rule
from hangupsms.models import CompletedCall, PlannedMessage, RenderedText
from hangupsms.phone import NumberCheck, check_number, region_of
from hangupsms.policy import prepare
from hangupsms.render import Renderer, RenderError, call_context, clean_text
from hangupsms.rules import select

SKIPPED_BY_DIALPLAN = "the dialplan asked not to text this call (HANGUPSMS_SKIP)"
NOTIFY_VARIABLE = "HANGUPSMS_NOTIFY"  # `notify?to=…` over FastAGI, or Set() in the dialplan
MAX_NOTIFY = 3  # numbers one call may have texted through `to: notify`
_SHOWN_RAW = 40  # characters of a caller-supplied number quoted in a skip reason


def plan(
    call: CompletedCall, cfg: Config, renderer: Renderer, *, now: float | None = None,
) -> list[PlannedMessage]:
    """One PlannedMessage per selected rule, in rule order; unsendable ones carry skip_reason.

    A skipped message still carries its body when the template rendered, so the record
    shows what would have been sent. The policy (`policy.prepare`) gives each its category,
    footer, cost and schedule as of `now` (default: the call's end).
    """
    customer = check_number(call.customer_number, cfg.phone)
    rules = select(call, cfg.rules, ZoneInfo(cfg.timezone), customer.e164)
    if not rules:
        return []
    context = call_context(call, cfg, customer.e164)
    at = call.ended_at if now is None else now
    planned = [
        prepare(message, rule, cfg, at)
        for rule in rules
        for to, problem in _targets(rule.send.to, call, cfg, customer)
        for message in [_plan_rule(rule, to, problem, customer, renderer, context)]
    ]
    if call.variables.get("HANGUPSMS_SKIP"):
        # The dialplan said so (AGI /skip or Set(HANGUPSMS_SKIP=1)): record, never send.
        return [dataclasses.replace(p, skip_reason=p.skip_reason or SKIPPED_BY_DIALPLAN)
                for p in planned]
    return planned


def _plan_rule(
    rule: Rule,
    to: str,
    recipient_problem: str | None,
    customer: NumberCheck,
    renderer: Renderer,
    context: Mapping[str, object],
) -> PlannedMessage:
    body: RenderedText | None = None
    render_problem: str | None = None
    try:
        body = renderer.render(rule.send.template, context)
    except RenderError as exc:
        render_problem = f"render failed: {exc}"
    return PlannedMessage(
        rule=rule.name,
        recipient=rule.send.to,
        to=to,
        provider=rule.send.via[0],
        fallbacks=rule.send.via[1:],
        template=rule.send.template,
        body=body,
        skip_reason=recipient_problem or render_problem,
        region=customer.region if rule.send.to == "customer" else region_of(to) if to else None,
    )


def _targets(
    target: str, call: CompletedCall, cfg: Config, customer: NumberCheck
) -> list[tuple[str, str | None]]:
    """Each number to text for `target`, with why it cannot be texted (None when it can)."""
    if target == "notify":
        return _notify_targets(call.variables.get(NOTIFY_VARIABLE, ""), cfg)
    return [_recipient(target, call, cfg, customer)]


def _notify_targets(raw: str, cfg: Config) -> list[tuple[str, str | None]]:
    """The numbers the dialplan gave (comma-separated), each checked like a customer's."""
    numbers = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not numbers:
        return [("", f"no number to notify from the dialplan ({NOTIFY_VARIABLE})")]
    targets: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for number in numbers:
        check = check_number(number, cfg.phone)
        shown = clean_text(number, _SHOWN_RAW)
        to = check.e164 or shown
        if to in seen:
            continue  # the same number written twice: one message
        seen.add(to)
        if len(targets) >= MAX_NOTIFY:
            targets.append((to, f"more than {MAX_NOTIFY} numbers to notify; '{shown}' not texted"))
        elif not check.ok or check.e164 is None:
            targets.append((to, f"number to notify '{shown}' is not textable: {check.reason}"))
        else:
            targets.append((to, None))
    return targets


def _recipient(
    target: str, call: CompletedCall, cfg: Config, customer: NumberCheck
) -> tuple[str, str | None]:
    """The number to text for `target`, and why it cannot be texted (None when it can)."""
    if target == "customer":
        raw = call.customer_number
        if customer.ok and customer.e164 is not None:
            return customer.e164, None
        shown = clean_text(raw, _SHOWN_RAW)
        return customer.e164 or shown, (
            f"customer number '{shown}' is not textable: {customer.reason}"
        )
    if target == "agent":
        if call.agent_id is None:
            return "", "no agent on this call"
        agent = cfg.agents.get(call.agent_id)
        if agent is None or not agent.mobile:
            return "", f"no mobile for agent {call.agent_id}"
        return agent.mobile, None
    return target, None  # a fixed number, already E.164 from the configuration
