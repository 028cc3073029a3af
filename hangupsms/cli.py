"""Command line: `main(argv) -> int`; exit codes tell usage, config and runtime errors apart."""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import structlog

from hangupsms import crm, logs, optout, policycli
from hangupsms.config import Config, ConfigError, load_config
from hangupsms.models import RenderedText
from hangupsms.policystore import PolicyStore
from hangupsms.render import Renderer, RenderError, worst_case_context
from hangupsms.secrecy import exposure_warning, secret_values
from hangupsms.store import Store, StoreError

EXIT_OK = 0
EXIT_RUNTIME = 1  # something failed while running (database, network, …)
EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_CONFIG = 78  # EX_CONFIG: the configuration is wrong; systemd should not restart in a loop

DEFAULT_CONFIG = Path("/etc/hangupsms/hangupsms.yaml")
log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hangupsms", description="Post-call SMS for Asterisk and FreePBX."
    )
    parser.add_argument("--log-level", help="debug, info, warning, error (default: info; "
                        "warning for demo, whose output is the messages)")
    sub = parser.add_subparsers(dest="command", required=True)

    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                               help=f"configuration file (default {DEFAULT_CONFIG})")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[config_option])

    with_config("run", "run the daemon")
    with_config("check", "validate the configuration and render every template")
    doctor = with_config("doctor", "what the AMI user, providers and database allow")
    doctor.add_argument("--listen", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for a test call (default 60; it stops "
                        "early once a call has ended)")
    preview = with_config("preview", "show what a recorded AMI transcript would send")
    preview.add_argument("transcript", type=Path, help="an .ami byte stream")
    replay = with_config("replay", "run a recorded AMI transcript through the pipeline")
    replay.add_argument("transcript", type=Path, help="an .ami byte stream")
    replay.add_argument("--dry-run", action="store_true",
                        help="print messages instead of sending; use a temporary database")
    history = with_config("history", "messages by number, call or date")
    history.add_argument("--number", help="recipient or customer number (E.164)")
    history.add_argument("--call", help="the call's Linkedid")
    history.add_argument("--since", help="YYYY-MM-DD[THH:MM] in the configured timezone")
    history.add_argument("--until", help="YYYY-MM-DD[THH:MM] in the configured timezone")
    history.add_argument("--limit", type=int, default=200)
    with_config("stats", "count messages by state")
    erase = with_config("erase", "remove a phone number (and its calls' personal data)")
    erase.add_argument("number", help="the number, as E.164 or as it is dialled locally")
    optout.add_parser(sub, config_option)
    policycli.add_parsers(sub, config_option)
    crm.add_parsers(sub, config_option)
    demo = sub.add_parser("demo", help="replay real calls from a built-in recording")
    demo.add_argument("--db", type=Path, help="keep the demo database at this path")
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run one command; returns the process exit code."""
    stdout = out if out is not None else sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    quiet = args.command in ("demo", "doctor")  # their output is the point, not the log
    logs.configure(args.log_level or ("warning" if quiet else "info"))
    try:
        return _dispatch(args, stdout)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except FileNotFoundError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_RUNTIME


def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    from hangupsms import commands  # the command bodies import the whole pipeline

    if args.command == "demo":
        return asyncio.run(commands.demo(out, keep_db=args.db))
    cfg = load_config(args.config)
    logs.redact(secret_values(cfg))
    if args.command == "check":
        return check(cfg, out)
    # Each command that takes the configuration: its coroutine, run to completion.
    commands_with_config: dict[str, Callable[[], Coroutine[Any, Any, int]]] = {
        "run": lambda: _run(cfg, args.config),
        "doctor": lambda: _doctor(cfg, args.listen, out),
        "preview": lambda: commands.preview(cfg, args.transcript, out),
        "replay": lambda: commands.replay(cfg, args.transcript, out, dry_run=args.dry_run),
        "history": lambda: _history(cfg, args, out),
        "stats": lambda: _stats(cfg, out),
        "erase": lambda: _erase(cfg, args.number, out),
        "optout": lambda: optout.optout(cfg, args, out),
        "guard": lambda: policycli.guard(cfg, args, out),
        "incident": lambda: policycli.incident(cfg, args, out),
        **{name: functools.partial(command, cfg, args, out)
           for name, command in crm.COMMANDS.items()},
    }
    if args.command in commands_with_config:
        return asyncio.run(commands_with_config[args.command]())
    raise AssertionError(args.command)


def check(cfg: Config, out: TextIO) -> int:
    """Print what the configuration holds and each template's worst-case size."""
    print(f"{cfg.source or 'configuration'}: OK", file=out)
    print(f"  pbx: {', '.join(p.name for p in cfg.pbx)}", file=out)
    print(f"  providers: {', '.join(f'{n} ({p.kind})' for n, p in cfg.providers.items())}",
          file=out)
    print(f"  rules: {', '.join(r.name for r in cfg.rules)}", file=out)
    for rule in cfg.rules:
        if len(rule.send.via) > 1:
            print(f"    {rule.name} via {' -> '.join(rule.send.via)} (failover order)", file=out)
    policycli.print_policy(cfg, out)
    renderer = Renderer.from_config(cfg)
    context = worst_case_context(cfg)
    failed = False
    print("  templates (worst case):", file=out)
    renderings: dict[str, RenderedText] = {}
    for name in cfg.templates:
        try:
            rendered = renderer.render(name, context)
        except RenderError as exc:
            print(f"    {name}: ERROR {exc}", file=out)
            failed = True
            continue
        renderings[name] = rendered
        rendered = policycli.with_longest_footer(cfg, name, rendered)
        print(f"    {name}: {rendered.segments} segment(s), {rendered.encoding}, "
              f"{len(rendered.text)} chars", file=out)
    crm.print_template_features(cfg, renderings, out)
    source = Path(cfg.source) if cfg.source else None
    warning = exposure_warning(source) if source is not None and source.is_file() else None
    if warning:
        print(f"  warning: {warning}", file=out)
    return EXIT_CONFIG if failed else EXIT_OK


async def _doctor(cfg: Config, listen: float, out: TextIO) -> int:
    from hangupsms.doctor import diagnose, report

    print(f"logging in to each PBX; make a test call now (listening up to {listen:g} s)",
          file=out, flush=True)
    return EXIT_OK if report(await diagnose(cfg, listen=listen), out) else EXIT_RUNTIME


async def _run(cfg: Config, path: Path) -> int:
    from hangupsms.daemon import Daemon

    daemon = Daemon(cfg, config_path=path)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    log.info("daemon.starting", config=cfg.source, pbx=[p.name for p in cfg.pbx])
    await daemon.run()
    return EXIT_OK


def _parse_when(value: str | None, tz: ZoneInfo) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=tz).timestamp()
    except ValueError:
        raise SystemExit(f"not a date: {value!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None


async def _history(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    tz = ZoneInfo(cfg.timezone)
    store = await Store.open(cfg.database, readonly=True)
    try:
        rows = await store.history(
            number=args.number, linkedid=args.call, since=_parse_when(args.since, tz),
            until=_parse_when(args.until, tz), limit=args.limit,
        )
        attempts = {row.id: await store.attempts(row.id) for row in rows}
    finally:
        await store.close()
    for row in rows:
        why = f" ({row.reason})" if row.reason else ""
        if row.delivery:
            code = f" {row.error_code}" if row.error_code else ""
            why += f", {row.delivery}{code}"
        print(f"{_local(row.created_at, tz)} {row.pbx}/{row.linkedid} {row.rule} -> "
              f"{row.to_number} [{row.state}{why}] via {row.provider} attempts={row.attempts} "
              f"{row.body or ''}",
              file=out)
        for attempt in attempts[row.id]:
            code = f" {attempt.error_code}" if attempt.error_code else ""
            detail = f": {attempt.detail}" if attempt.detail else ""
            print(f"    {_local(attempt.at, tz)} {attempt.outcome}{code}{detail}", file=out)
    if not rows:
        print("no messages", file=out)
    return EXIT_OK


def _local(epoch: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M:%S")


_HOLDERS = {"guard": "fraud guard", "coupon": "coupon codes"}


async def _stats(cfg: Config, out: TextIO) -> int:
    store = await Store.open(cfg.database, readonly=True)
    try:
        counts = await store.counts_by_state()
        held = await PolicyStore(store).held_by_kind() if "held" in counts else {}
    finally:
        await store.close()
    for state, count in counts.items():
        # Each kind of hold has its own way out: `guard release` or `coupons load`.
        kinds = ", ".join(f"{_HOLDERS[k]} {n}" for k, n in sorted(held.items()))
        print(f"{state}: {count}" + (f" ({kinds})" if state == "held" else ""), file=out)
    print(f"total: {sum(counts.values())}", file=out)
    return EXIT_OK


async def _erase(cfg: Config, number: str, out: TextIO) -> int:
    from hangupsms.erase import erase_number
    from hangupsms.phone import check_number

    checked = check_number(number, cfg.phone)
    store = await Store.open(cfg.database)
    try:
        done = await erase_number(store, [number, checked.e164 or ""])
    finally:
        await store.close()
    print(f"erased: {done.calls} call(s) pseudonymised, {done.messages} message(s) cleared, "
          f"{done.journal_rows} journal row(s) deleted; database rebuilt", file=out)
    return EXIT_OK


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
