"""`hangupsms optout add|remove|list|import`: the suppression list from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from hangupsms.config import Config, PhoneConfig
from hangupsms.phone import check_number
from hangupsms.store import Store
from hangupsms.suppression import SuppressionList, read_numbers

EXIT_OK, EXIT_INPUT = 0, 1
SOURCE = "cli"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               with_config: argparse.ArgumentParser) -> None:
    """The `optout` command and its four actions (`with_config` gives the -c option)."""
    optout = sub.add_parser("optout", help="numbers never to text (the suppression list)",
                            parents=[with_config])
    # -c is accepted after the action too; SUPPRESS keeps the action from resetting it.
    late_config = argparse.ArgumentParser(add_help=False)
    late_config.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS,
                             help=argparse.SUPPRESS)
    actions = optout.add_subparsers(dest="action", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=help_text, parents=[late_config])

    add = action("add", "suppress a number")
    add.add_argument("number")
    add.add_argument("--reason", default="added by hand")
    remove = action("remove", "lift a suppression (the person opted back in)")
    remove.add_argument("number")
    remove.add_argument("--reason", default="removed by hand")
    action("list", "every suppressed number")
    load = action("import", "suppress every number of a file "
                  "(one per line, or the first column of a CSV)")
    load.add_argument("file", type=Path)
    load.add_argument("--reason", default="imported")


def normalise(raw: str, phone: PhoneConfig) -> str | None:
    """The E.164 form of any readable number: a suppression is never refused for its type."""
    lenient = dataclasses.replace(phone, number_check="possible", allowed_regions=(),
                                  mobile_only=False)
    return check_number(raw, lenient).e164


async def optout(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    store = await Store.open(cfg.database)
    try:
        suppressions = SuppressionList(store)
        if args.action == "list":
            tz = ZoneInfo(cfg.timezone)
            entries = await suppressions.entries()
            for entry in entries:
                when = datetime.fromtimestamp(entry.created_at, tz).strftime("%Y-%m-%d %H:%M")
                print(f"{entry.number}\t{when}\t{entry.source}\t{entry.reason}", file=out)
            print(f"{len(entries)} suppressed number(s)", file=out)
            return EXIT_OK
        if args.action == "import":
            return await _import(cfg, suppressions, args, out)
        number = normalise(args.number, cfg.phone)
        if number is None:
            print(f"error: '{args.number}' is not a phone number", file=out)
            return EXIT_INPUT
        if args.action == "add":
            done = await suppressions.add(number, reason=args.reason, source=SOURCE,
                                          now=time.time())
            print(f"{number}: {'suppressed' if done else 'already suppressed'}", file=out)
        else:
            done = await suppressions.remove(number, reason=args.reason, source=SOURCE,
                                             now=time.time())
            print(f"{number}: {'no longer suppressed' if done else 'was not suppressed'}",
                  file=out)
        return EXIT_OK
    finally:
        await store.close()


async def _import(cfg: Config, suppressions: SuppressionList, args: argparse.Namespace,
                  out: TextIO) -> int:
    """All or nothing: a file with an unreadable line is refused, naming each such line."""
    text = args.file.read_text(encoding="utf-8-sig")
    numbers: list[str] = []
    bad: list[str] = []
    for line, value in read_numbers(text):
        number = normalise(value, cfg.phone)
        if number is None:
            bad.append(f"{args.file}:{line}: '{value}' is not a phone number")
        else:
            numbers.append(number)
    if bad:
        for problem in bad:
            print(problem, file=out)
        print(f"nothing imported: {len(bad)} unreadable line(s)", file=out)
        return EXIT_INPUT
    added = await suppressions.add_many(numbers, reason=args.reason,
                                        source=f"import:{args.file.name}", now=time.time())
    print(f"{added} number(s) suppressed, {len(set(numbers)) - added} already were", file=out)
    return EXIT_OK
