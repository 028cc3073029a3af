"""`hangupsms coupons`, `customers show`, `export` and `report --html` from the command line."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from hangupsms.config import Config
from hangupsms.customers import Customer, active_since, customer, customers
from hangupsms.models import RenderedText
from hangupsms.optout import normalise
from hangupsms.policystore import PolicyStore
from hangupsms.store import Store, StoreError
from hangupsms.tracking import coupon_counts, load_coupons, release_held

EXIT_OK, EXIT_INPUT = 0, 1
_EXPORT_FIELDS = ("number", "name", "calls", "first_call", "last_call", "messages_sent",
                  "clicks", "ratings", "tags", "suppressed")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                with_config: argparse.ArgumentParser) -> None:
    coupons = sub.add_parser("coupons", help="coupon code pools for {{ coupon('pool') }}",
                             parents=[with_config])
    actions = coupons.add_subparsers(dest="action", required=True)
    load = actions.add_parser("load", help="add the codes of a file (one per line) to a pool")
    load.add_argument("pool")
    load.add_argument("file", type=Path)
    actions.add_parser("list", help="each pool's unused and used codes")
    show = sub.add_parser("customers", help="what is known of a customer",
                          parents=[with_config])
    show_actions = show.add_subparsers(dest="action", required=True)
    show_actions.add_parser("show", help="calls, tags, ratings of one number").add_argument(
        "number")
    export = sub.add_parser("export", help="customers with their tags, for a CRM",
                            parents=[with_config])
    export.add_argument("--since", required=True, help="YYYY-MM-DD in the configured timezone")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    report = sub.add_parser("report", help="the report page, written to a file",
                            parents=[with_config])
    report.add_argument("--html", type=Path, required=True, help="the file to write")
    report.add_argument("--days", type=int, default=30)


async def coupons(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    store = await Store.open(cfg.database)
    try:
        if args.action == "list":
            for pool, (unused, used) in (await coupon_counts(store)).items():
                print(f"{pool}\tunused {unused}\tused {used}", file=out)
            return EXIT_OK
        lines = args.file.read_text(encoding="utf-8-sig").splitlines()
        codes = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        bad = [code for code in codes if any(c.isspace() or not c.isprintable() for c in code)]
        if bad or not codes:
            print(f"nothing loaded: {len(bad)} code(s) with spaces or control characters"
                  if bad else "nothing loaded: the file has no code", file=out)
            return EXIT_INPUT
        added = await load_coupons(store, args.pool, codes, time.time())
        print(f"{args.pool}: {added} code(s) added, {len(set(codes)) - added} already known "
              "(a code is used once, ever)", file=out)
        released = await release_held(store, time.time())
        if released:
            guard = await PolicyStore(store).guard()
            after = (": the fraud guard is tripped, they wait for `hangupsms guard release`"
                     if guard.tripped_at is not None else " and will be sent")
            print(f"{released} held message(s) got their codes{after}", file=out)
        return EXIT_OK
    finally:
        await store.close()


async def show_customer(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    number = normalise(args.number, cfg.phone)
    if number is None:
        print(f"error: '{args.number}' is not a phone number", file=out)
        return EXIT_INPUT
    store = await Store.open(cfg.database, readonly=True)
    try:
        found = await customer(store, number)
    finally:
        await store.close()
    if found is None:
        print(f"{number}: nothing recorded", file=out)
        return EXIT_OK
    for key, value in _fields(found, ZoneInfo(cfg.timezone)).items():
        print(f"{key}: {value}", file=out)
    return EXIT_OK


async def export(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    tz = ZoneInfo(cfg.timezone)
    try:
        since = datetime.fromisoformat(args.since).replace(tzinfo=tz).timestamp()
    except ValueError:
        print(f"error: not a date: {args.since!r} (use YYYY-MM-DD)", file=out)
        return EXIT_INPUT
    store = await Store.open(cfg.database, readonly=True)
    try:
        found = await customers(store, await active_since(store, since))
    finally:
        await store.close()
    if args.format == "jsonl":
        for item in found:
            row = _fields(item, tz)
            row["tags"], row["ratings"] = list(item.tags), list(item.ratings)
            print(json.dumps(row, ensure_ascii=False), file=out)
        return EXIT_OK
    writer = csv.DictWriter(out, fieldnames=_EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for item in found:
        writer.writerow(_fields(item, tz))
    return EXIT_OK


def _fields(item: Customer, tz: ZoneInfo) -> dict[str, object]:
    def when(epoch: float | None) -> str:
        return "" if epoch is None else datetime.fromtimestamp(epoch, tz).isoformat()

    return {
        "number": item.number, "name": item.name, "calls": item.calls,
        "first_call": when(item.first_call), "last_call": when(item.last_call),
        "messages_sent": item.messages_sent, "clicks": item.clicks,
        "ratings": " ".join(str(r) for r in item.ratings), "tags": ";".join(item.tags),
        "suppressed": item.suppressed,
    }


async def report(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    from hangupsms.web.report import MAX_DAYS, build_report

    store = await Store.open(cfg.database, readonly=True)
    try:
        html = await build_report(store, cfg.timezone, days=max(1, min(args.days, MAX_DAYS)),
                                  now=time.time())
    finally:
        await store.close()
    args.html.write_text(html, encoding="utf-8")
    print(f"report written to {args.html}", file=out)
    return EXIT_OK


COMMANDS: dict[str, Callable[[Config, argparse.Namespace, TextIO], Coroutine[None, None, int]]] = {
    "coupons": coupons, "customers": show_customer, "export": export, "report": report,
}


def print_template_features(cfg: Config, rendered: Mapping[str, RenderedText],
                            out: TextIO) -> None:
    """`check`: which templates put in tracked links and coupon codes; empty pools warned.

    A pool is looked up in the database when it exists: a template drawing from an empty
    pool has its messages held until `coupons load`.
    """
    using = {name: r for name, r in rendered.items() if r.links or r.coupons}
    if not using:
        return
    print("  web features in templates:", file=out)
    for name, r in using.items():
        parts = [f"tracked link to {link.url}" + (f" (tag {link.tag})" if link.tag else "")
                 for link in r.links]
        parts += [f"coupon from pool {slot.pool}" for slot in r.coupons]
        print(f"    {name}: {'; '.join(parts)}", file=out)
    pools = sorted({slot.pool for r in using.values() for slot in r.coupons})
    if not pools:
        return
    if not cfg.database.is_file():
        print("  coupon pools: no database yet; load codes before the first call "
              "(`hangupsms coupons load POOL FILE`)", file=out)
        return
    try:
        counts = asyncio.run(_coupon_counts(cfg.database))
    except StoreError as exc:
        print(f"  warning: coupon pools not checked: {exc}", file=out)
        return
    for pool in pools:
        unused = counts.get(pool, (0, 0))[0]
        if unused == 0:
            users = ", ".join(n for n, r in using.items() if pool in {s.pool for s in r.coupons})
            print(f"  warning: coupon pool '{pool}' ({users}) has no unused code: its messages "
                  f"are held until `hangupsms coupons load {pool} FILE`", file=out)
        else:
            print(f"  coupon pool '{pool}': {unused} unused code(s)", file=out)


async def _coupon_counts(database: Path) -> dict[str, tuple[int, int]]:
    store = await Store.open(database, readonly=True)
    try:
        return await coupon_counts(store)
    finally:
        await store.close()
