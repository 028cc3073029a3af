"""End to end: the real Daemon, in this process, from a fake Asterisk to a fake provider.

tracker -> rules -> render -> planner -> SQLite outbox (a real file, WAL, synchronous=FULL)
-> sender -> the real Twilio provider -> a Twilio-compatible endpoint in its own process.
Logging is on, at info, as JSON lines to a file (what `hangupsms run` does under systemd).

Two probes, neither inside hangupsms: the AMI sink is wrapped to note when each call's CEL
LINKEDID_END was received (`AmiEvent.received_at`), and the provider's `send` is wrapped to
note which call each request belongs to (the sender sends one at a time, so the n-th request
the endpoint sees is the n-th send). Latency is the endpoint's first-byte time of a call's
first request minus that call's LINKEDID_END: CDR grace, planning, the commit, the claim
and the HTTP client included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.peers import ami_server, fake_provider
from bench.traffic import REFERENCE_CONFIG, expected_sends, mean_call_seconds, traffic
from hangupsms import logs
from hangupsms.ami import AmiConnection, EventQueue
from hangupsms.config import Config, load_config
from hangupsms.daemon import Daemon
from hangupsms.models import AmiEvent, OutboundMessage, SendResult, SendStatus
from hangupsms.providers import SmsProvider, build_provider

RUN_TIMEOUT = 900.0
PROVIDER_RATE = 100_000.0  # messages/s: pacing never holds the sender back here


class EndTap:
    """The AMI sink in front of the daemon's queue: notes the first event and every end."""

    def __init__(self, queue: EventQueue) -> None:
        self._put = queue.put
        self.ends: dict[str, float] = {}  # linkedid -> LINKEDID_END received_at
        self.first: float | None = None
        self.first_cpu = 0.0
        self.first_loop_cpu = 0.0  # the event loop's thread alone
        self.events = 0

    def put(self, event: AmiEvent) -> None:
        self.events += 1
        if self.first is None:
            self.first = event.received_at
            self.first_cpu = time.process_time()
            self.first_loop_cpu = time.thread_time()
        if event.name == "CEL" and event.headers.get("EventName") == "LINKEDID_END":
            self.ends.setdefault(event.headers.get("LinkedID", ""), event.received_at)
        self._put(event)


@dataclass
class SendLog:
    """What a provider was asked to send: the call of each send, and when `expected` went."""

    expected: int
    sends: list[tuple[str, str]] = field(default_factory=list)  # (linkedid, to), in order
    accepted: int = 0
    last: float = 0.0
    last_cpu: float = 0.0
    last_loop_cpu: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def instrument(self, provider: SmsProvider) -> SmsProvider:
        """Wrap the provider's `send` in place (any provider, whatever else its port holds)."""
        send = provider.send

        async def recorded(message: OutboundMessage) -> SendResult:
            self.sends.append((message.call_linkedid, message.to))
            result = await send(message)
            if result.status is SendStatus.ACCEPTED:
                self.accepted += 1
                if self.accepted >= self.expected and not self.done.is_set():
                    self.last, self.last_cpu = time.monotonic(), time.process_time()
                    self.last_loop_cpu = time.thread_time()
                    self.done.set()
            return result

        setattr(provider, "send", recorded)  # noqa: B010 - a probe, kept out of hangupsms
        return provider


def bench_config(folder: Path, ami_port: int, provider_port: int) -> Config:
    """reference.yaml aimed at the fakes, with a database file in `folder`."""
    raw = yaml.safe_load(REFERENCE_CONFIG.read_text(encoding="utf-8"))
    raw["pbx"][0]["port"] = ami_port
    raw["providers"]["twilio"]["api_url"] = f"http://127.0.0.1:{provider_port}"
    raw["providers"]["twilio"]["rate"] = PROVIDER_RATE
    # Every generated caller is in one range (+44 7700 900xxx): the fraud guard's default
    # per-prefix limit would hold all but the first 30 messages of the burst.
    raw["policy"] = {"guard": {"per_prefix_hour": 1_000_000, "hourly": 1_000_000,
                               "daily": 1_000_000}}
    raw["database"] = str(folder / "bench.db")
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_config(path, environ={})


@contextlib.asynccontextmanager
async def _sampled(probe: Callable[[], int], every: float = 0.05) -> AsyncIterator[list[int]]:
    """The peak of `probe()` while the block runs, sampled every `every` seconds."""
    peak = [0]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], probe())
            await asyncio.sleep(every)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run(calls: int, concurrency: int, *, rate: float = 0.0, event_filter: str = "none",
              profiler: Any = None) -> dict[str, Any]:
    """One run of `calls` calls; `rate` 0 blasts them. Returns the figures (see README)."""
    stream = traffic(calls, concurrency, event_filter=event_filter)
    sources = stream.sources()
    expected = expected_sends(sources.values())
    with tempfile.TemporaryDirectory(prefix="hangupsms-bench-") as tmp:
        folder = Path(tmp)
        with (folder / "daemon.log").open("w", encoding="utf-8") as log_file:
            logs.configure("info", stream=log_file, json=True)
            async with fake_provider() as provider, ami_server(
                calls, concurrency, event_filter=event_filter, rate=rate
            ) as ami:
                cfg = bench_config(folder, int(ami["port"]), int(provider["port"]))
                figures = await _drive(cfg, expected, int(ami["frames"]), profiler)
                arrivals = await _arrivals(int(provider["port"]))
            logs.configure("warning")
        figures["log_lines"] = sum(1 for _ in (folder / "daemon.log").open(encoding="utf-8"))
        figures.update(_check_database(folder / "bench.db", sources, expected))
    figures.update(calls=calls, concurrency=concurrency, rate=rate, filter=event_filter,
                   expected_messages=expected, frames=int(ami["frames"]))
    figures["latency_ms"] = _latencies(figures.pop("sends"), arrivals, figures.pop("ends"))
    return figures


async def _drive(cfg: Config, expected: int, frames: int, profiler: Any) -> dict[str, Any]:
    provider = SendLog(expected)
    daemon = Daemon(cfg, providers={"twilio": provider.instrument(
        build_provider(cfg.providers["twilio"]))})
    tap = EndTap(daemon.queue)
    daemon.connections = [AmiConnection(pbx, tap.put) for pbx in cfg.pbx]
    if profiler is not None:
        profiler.enable()
    task = asyncio.create_task(daemon.run(), name="bench-daemon")
    try:
        async with _sampled(daemon.queue.qsize) as queue_peak, asyncio.timeout(RUN_TIMEOUT):
            done = asyncio.create_task(provider.done.wait())
            await asyncio.wait({done, task}, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                raise RuntimeError(f"the daemon ended early: {task.exception()!r}")
    finally:
        daemon.stop.set()
        await task
        if profiler is not None:
            profiler.disable()
    if tap.first is None:
        raise RuntimeError("no event reached the daemon")
    seconds = provider.last - tap.first
    calls = len(tap.ends)
    return {
        # From the last call's end to its message: about one latency when the daemon kept
        # up with the traffic, the backlog's length when it fell behind.
        "drain_seconds": round(provider.last - max(tap.ends.values()), 3),
        "seconds": round(seconds, 3), "calls_per_second": round(calls / seconds, 1),
        "events_per_second": round(tap.events / seconds),
        "cpu_ms_per_call": round((provider.last_cpu - tap.first_cpu) / calls * 1e3, 3),
        # The rest of the process CPU is other threads: aiosqlite's, where SQLite runs.
        "loop_cpu_ms_per_call": round(
            (provider.last_loop_cpu - tap.first_loop_cpu) / calls * 1e3, 3),
        "events_received": tap.events, "events_sent": frames, "events_dropped":
        daemon.queue.dropped, "queue_peak": queue_peak[0], "sends": provider.sends,
        "ends": tap.ends,
    }


async def _arrivals(port: int) -> list[tuple[float, str]]:
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/bench/arrivals"
    ) as response:
        return [(float(at), str(to)) for at, to in json.loads(await response.text())]


def _latencies(sends: list[tuple[str, str]], arrivals: list[tuple[float, str]],
               ends: dict[str, float]) -> dict[str, float]:
    """LINKEDID_END received -> first byte of the call's first request, in ms."""
    if len(sends) != len(arrivals):
        raise RuntimeError(f"{len(sends)} sends but {len(arrivals)} requests arrived")
    first: dict[str, float] = {}
    for (linkedid, to), (at, arrived_to) in zip(sends, arrivals, strict=True):
        if to != arrived_to:
            raise RuntimeError(f"send order lost: {to} sent, {arrived_to} arrived")
        first.setdefault(linkedid, at)
    values = sorted((at - ends[linkedid]) * 1e3 for linkedid, at in first.items())
    return {
        "calls": len(values), "p50": round(statistics.median(values), 1),
        "p99": round(values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)], 1),
        "max": round(values[-1], 1), "min": round(values[0], 1),
    }


def _check_database(path: Path, sources: dict[str, str], expected: int) -> dict[str, Any]:
    """Every call recorded once, every expected message sent: the run counts only if so."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        calls = {row[0] for row in db.execute("SELECT linkedid FROM calls")}
        states = dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())
    if calls != set(sources) or states.get("sent") != expected:
        raise RuntimeError(f"wrong outcome: {len(calls)} calls of {len(sources)}, "
                           f"messages {states} (expected {expected} sent)")
    return {"db_calls": len(calls), "db_messages": states}


def paced_concurrency(rate: float) -> int:
    """Calls in progress at `rate` calls/s with the recorded durations (real-time spacing)."""
    return max(1, math.ceil(rate * mean_call_seconds(traffic(1, 1))))
