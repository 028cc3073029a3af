"""The bodies of `preview`, `replay` and `demo`: recorded calls through the real pipeline."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TextIO

from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.config import Config, ProviderConfig, parse_config
from hangupsms.daemon import Daemon
from hangupsms.dispatch import Dispatcher, sender_settings
from hangupsms.frames import event_frames
from hangupsms.models import AmiEvent, CompletedCall, PlannedMessage
from hangupsms.pipeline import CallPipeline
from hangupsms.planner import plan
from hangupsms.policy import with_incident
from hangupsms.policystore import Incident, PolicyGate, PolicyStore
from hangupsms.providers import SmsProvider, build_provider
from hangupsms.render import Renderer, measure, shown_text
from hangupsms.replay import AmiReplayServer
from hangupsms.store import Store

EXIT_OK = 0
FAR_FUTURE = float("inf")


def transcript_events(path: Path, pbx: str) -> Iterator[AmiEvent]:
    """The `Event:` frames of a recorded stream as AmiEvents of `pbx`."""
    for frame in event_frames(path):
        yield AmiEvent(pbx, frame.first("Event") or "", frame.as_dict(), 0.0)


def transcript_calls(cfg: Config, path: Path) -> list[CompletedCall]:
    """Every call of a transcript, as the tracker finalises it (as if read by the first pbx).

    The whole recording is fed at one instant, so every late Cdr falls within the end
    grace; then time jumps ahead and the tracker finalises what ended (and evicts, with a
    warning, what never did).
    """
    pbx = cfg.pbx[0]
    tracker = CallTracker(pbx.name, TrackerSettings.from_pbx(pbx))
    calls: list[CompletedCall] = []
    for event in transcript_events(path, pbx.name):
        calls += tracker.feed(event, 0.0)
    calls += tracker.expire(FAR_FUTURE)
    return calls


async def preview(cfg: Config, path: Path, out: TextIO) -> int:
    """Print each call's facts and what the rules would send, without storing anything."""
    renderer = Renderer.from_config(cfg)
    incident = await _incident_in_force(cfg, out)
    for call in transcript_calls(cfg, path):
        print(f"call {call.pbx}/{call.linkedid}: {call.direction} from "
              f"{call.customer_number or '?'} ({call.customer_name}) did={call.did} "
              f"queue={call.queue} agent={call.agent_id} {call.disposition} "
              f"talk={call.talk_seconds}s wait={call.wait_seconds}s", file=out)
        planned = plan(call, cfg, renderer, now=time.time())
        for message in planned:
            _print_planned(message, incident, out)
        if not planned:
            print("  no rule matched", file=out)
    return EXIT_OK


def _print_planned(message: PlannedMessage, incident: Incident | None, out: TextIO) -> None:
    if message.skip_reason:
        print(f"  skip {message.rule} -> {message.to}: {message.skip_reason}", file=out)
    elif message.send_at is not None:
        print(f"  later {message.rule} -> {message.to}: {message.wait_reason}", file=out)
    elif message.body is not None:
        body = message.body
        if incident is not None:  # the sender adds it right before the send
            body = measure(with_incident(shown_text(body), incident.text, incident.replace))
        via = " -> ".join((message.provider, *message.fallbacks))
        print(f"  send {message.rule} -> {message.to} via {via} "
              f"({body.segments} seg, {body.encoding}): {shown_text(body)}", file=out)


async def _incident_in_force(cfg: Config, out: TextIO) -> Incident | None:
    """The incident notice the running daemon would add now (none without a database)."""
    if not await asyncio.to_thread(cfg.database.is_file):
        return None
    store = await Store.open(cfg.database, readonly=True)
    try:
        incident = await PolicyStore(store).incident()
    finally:
        await store.close()
    if incident is not None:
        how = "replaces each message" if incident.replace else "appended to each message"
        print(f"incident notice on ({how}): {incident.text}", file=out)
    return incident


async def replay(cfg: Config, path: Path, out: TextIO, *, dry_run: bool) -> int:
    """Feed a transcript to the pipeline, record it and send what is due now."""
    with tempfile.TemporaryDirectory(prefix="hangupsms-replay-") as tmp:
        if dry_run:
            cfg = dataclasses.replace(
                cfg, database=Path(tmp) / "replay.db",
                providers={name: ProviderConfig(name=name, kind="console")
                           for name in cfg.providers},
            )
        store = await Store.open(cfg.database)
        providers = {name: build_provider(p, console=out) for name, p in cfg.providers.items()}
        try:
            pipeline = CallPipeline(cfg, store, journal=False)
            await pipeline.record(transcript_calls(cfg, path))
            await _drain(cfg, store, providers)
            print(f"{pipeline.calls_recorded} call(s) recorded in {cfg.database}"
                  + (" (temporary)" if dry_run else ""), file=out)
        finally:
            for provider in providers.values():
                await provider.close()
            await store.close()
    return EXIT_OK


async def _drain(cfg: Config, store: Store, providers: dict[str, SmsProvider]) -> None:
    rates, policies = sender_settings(cfg)
    await Dispatcher(store, providers, rates, policies=policies,
                     gate=PolicyGate(store, cfg)).drain()


def demo_transcripts() -> list[Path]:
    """The recordings shipped with the package, in a stable order."""
    folder = Path(str(resources.files("hangupsms") / "demo"))
    return sorted(folder.glob("*.ami"))


def demo_config(port: int, database: Path) -> Config:
    text = (resources.files("hangupsms") / "demo" / "demo.yaml").read_text(encoding="utf-8")
    environ = {"HANGUPSMS_DEMO_PORT": str(port), "HANGUPSMS_DEMO_DB": str(database)}
    return parse_config(text, source="demo.yaml", environ=environ)


async def demo(out: TextIO, *, keep_db: Path | None = None) -> int:
    """The daemon against a loopback replay of real calls; console provider; a temporary DB."""
    with tempfile.TemporaryDirectory(prefix="hangupsms-demo-") as tmp:
        database = keep_db if keep_db is not None else Path(tmp) / "demo.db"
        async with AmiReplayServer(demo_transcripts(), username="hangupsms",
                                   secret="demo") as server:  # noqa: S106 - loopback demo
            cfg = demo_config(server.port, database)
            print(f"hangupsms demo: replaying {len(demo_transcripts())} recorded calls "
                  f"from a real Asterisk 22 over AMI on 127.0.0.1:{server.port}", file=out)
            daemon = Daemon(cfg, console=out)
            runner = asyncio.create_task(daemon.run())
            await _until_done(daemon, server, runner)
            daemon.stop.set()
            await runner
        await _summary(database, out)
        if keep_db is not None:
            print(f"database kept at {keep_db}", file=out)
    return EXIT_OK


async def _until_done(daemon: Daemon, server: AmiReplayServer, runner: asyncio.Task[None]) -> None:
    """Wait until every recorded event was delivered, every call recorded and every SMS sent."""
    waiter = asyncio.ensure_future(server.events_done.wait())
    await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        waiter.cancel()
        await runner  # raises what ended the daemon early
        return
    await daemon.wait_drained()


async def _summary(database: Path, out: TextIO) -> None:
    store = await Store.open(database, readonly=True)
    try:
        calls = await store.calls()
        counts = await store.counts_by_state()
        rows = await store.history(limit=1000)
    finally:
        await store.close()
    print(f"\n{len(calls)} calls recorded; messages: "
          + ", ".join(f"{state} {count}" for state, count in counts.items()), file=out)
    for row in sorted(rows, key=lambda r: r.id):
        if row.state == "skipped":
            print(f"  skipped {row.rule} for call {row.linkedid}: {row.reason}", file=out)
