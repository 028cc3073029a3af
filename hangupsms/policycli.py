"""`hangupsms guard status|release`, `incident on|off|status`, and the policy part of `check`."""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from hangupsms.config import Config
from hangupsms.models import RenderedText
from hangupsms.policy.limits import describe_cap, describe_duration
from hangupsms.policy.windows import describe
from hangupsms.policystore import PolicyStore
from hangupsms.render import measure
from hangupsms.settings import Rule
from hangupsms.store import Store

EXIT_OK, EXIT_TRIPPED = 0, 3  # `guard status` exits 3 while tripped (for monitoring)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                with_config: argparse.ArgumentParser) -> None:
    """The `guard` and `incident` commands (`with_config` gives the -c option)."""
    late_config = argparse.ArgumentParser(add_help=False)
    late_config.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS,
                             help=argparse.SUPPRESS)
    guard = sub.add_parser("guard", help="the fraud guard: see it, release held messages",
                           parents=[with_config])
    guard_actions = guard.add_subparsers(dest="action", required=True)
    guard_actions.add_parser("status", help="tripped or not, why, and what it holds",
                             parents=[late_config])
    release = guard_actions.add_parser(
        "release", help="clear the guard; held messages are sent (or --discard-ed)",
        parents=[late_config])
    release.add_argument("--discard", action="store_true",
                         help="skip the held messages instead of sending them")
    incident = sub.add_parser("incident", help="a notice on every message (outages, "
                              "cancellations)", parents=[with_config])
    incident_actions = incident.add_subparsers(dest="action", required=True)
    on = incident_actions.add_parser("on", help="start adding the notice",
                                     parents=[late_config])
    on.add_argument("--text", required=True, help="the notice")
    on.add_argument("--replace", action="store_true",
                    help="send the notice instead of each message's own text")
    incident_actions.add_parser("off", help="stop adding the notice", parents=[late_config])
    incident_actions.add_parser("status", help="the notice in force, if any",
                                parents=[late_config])


async def guard(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    store = await Store.open(cfg.database)
    try:
        policy = PolicyStore(store)
        if args.action == "release":
            count = await policy.release(time.time(), discard=args.discard)
            print(f"guard released; {count} held message(s) "
                  f"{'discarded' if args.discard else 'queued for sending'}", file=out)
            return EXIT_OK
        state = await policy.guard()
        held = await policy.held_by_kind()
    finally:
        await store.close()
    tz = ZoneInfo(cfg.timezone)
    # Messages an empty coupon pool holds are not the guard's to release.
    coupons = held.get("coupon", 0)
    waiting = (f"; {coupons} other(s) wait for coupon codes (`hangupsms coupons load`)"
               if coupons else "")
    if state.tripped_at is None:
        print(f"guard: clear; tripped {state.trips} time(s) so far{waiting}", file=out)
        return EXIT_OK
    print(f"guard: TRIPPED at {_local(state.tripped_at, tz)}: {state.reason}", file=out)
    print(f"{held.get('guard', 0)} message(s) held; tripped {state.trips} time(s) so far; "
          f"release with `hangupsms guard release` (or `--discard`){waiting}", file=out)
    return EXIT_TRIPPED


async def incident(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    store = await Store.open(cfg.database)
    try:
        policy = PolicyStore(store)
        if args.action == "on":
            text = args.text.strip()
            if not text:
                print("error: the notice is empty", file=out)
                return 1
            await policy.set_incident(text, time.time(), replace=args.replace)
        elif args.action == "off":
            await policy.set_incident(None, time.time())
        current = await policy.incident()
    finally:
        await store.close()
    if current is None:
        print("incident: off", file=out)
    else:
        how = "replaces each message" if current.replace else "appended to each message"
        print(f"incident: on since {_local(current.since, ZoneInfo(cfg.timezone))} "
              f"({how}): {current.text}", file=out)
    return EXIT_OK


def _local(epoch: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M:%S")


def print_policy(cfg: Config, out: TextIO) -> None:
    """Per rule: its category, windows, caps and timing; then the budget and the guard."""
    policy = cfg.policy
    print("  policy per rule:", file=out)
    for rule in cfg.rules:
        print(f"    {rule.name}: {_rule_line(cfg, rule)}", file=out)
    budget = ", ".join(describe_cap(c) for c in policy.budget) or "none"
    print(f"  contact budget per recipient (all rules): {budget}", file=out)
    g = policy.guard
    costs = [f"{what} cost {limit:g}" for what, limit in
             (("hourly", g.hourly_cost), ("daily", g.daily_cost)) if limit is not None]
    print(f"  fraud guard: {g.per_prefix_hour}/h per prefix (+{g.prefix_digits} digits), "
          f"{g.hourly}/h, {g.daily}/day" + "".join(f", {c}" for c in costs), file=out)
    if policy.prices:
        print("  prices per segment: " + ", ".join(
            f"{region} {value:g}" for region, value in policy.prices.items()), file=out)


def with_longest_footer(cfg: Config, template: str, rendered: RenderedText) -> RenderedText:
    """A marketing template's worst case includes its longest footer."""
    if cfg.templates[template].category != "marketing":
        return rendered
    footers = cfg.policy.categories["marketing"].footers.values()
    return max((measure(f"{rendered.text}\n{f}") for f in footers),
               key=lambda r: (r.segments, len(r.text)), default=rendered)


def _rule_line(cfg: Config, rule: Rule) -> str:
    category = cfg.policy.categories[cfg.templates[rule.send.template].category]
    windows = "; ".join(f"{region} {describe(w)}" for region, w in category.windows.items())
    parts = [category.name, f"priority {rule.priority}",
             f"windows: {windows or 'any time'}",
             "caps: " + (", ".join(describe_cap(c) for c in category.caps) or "none")]
    if rule.send.caps:
        parts.append("rule caps: " + ", ".join(describe_cap(c) for c in rule.send.caps))
    if category.footers:
        parts.append("footers: " + "; ".join(f"{r} {t!r}" for r, t in category.footers.items()))
    send = rule.send
    if send.delay:
        parts.append(f"after {describe_duration(send.delay)}")
    if send.at is not None:
        parts.append(f"at {send.at // 60:02d}:{send.at % 60:02d}")
    if send.expires_after is not None:
        parts.append(f"expires after {describe_duration(send.expires_after)}")
    if send.cancel_if_answered:
        parts.append("cancelled by a later answered call")
    return "; ".join(parts)
