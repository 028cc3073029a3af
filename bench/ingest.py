"""Ingest: events per second through our AMI client and through bare panoramisk, same stream.

Ours is what the daemon runs: `AmiConnection` handing events to an `EventQueue`, consumed by
a task, with the daemon's filter (events no call needs are skipped before decoding). Bare
panoramisk is `panoramisk.Manager` with one `*` callback that counts. Both log in to the
same fake Asterisk (its own process), which sends the same bytes to each. Time runs from the
first event received to the last one consumed; CPU is this process's alone.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from panoramisk import Manager

from bench.amiserver import SENTINEL_ID
from bench.peers import ami_server
from hangupsms.ami import AmiConnection, EventQueue
from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.config import PbxConfig
from hangupsms.daemon import EVENT_QUEUE_SIZE

USER, SECRET = "bench", "bench"
RUN_TIMEOUT = 600.0
STALL = 10.0  # seconds without 1000 more events: the client is stuck


@dataclass(frozen=True, slots=True)
class IngestRun:
    client: str
    events: int  # frames sent on the wire
    delivered: int  # events the consumer got (fewer if the client skips some)
    seconds: float
    cpu_seconds: float
    dropped: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6


async def ours(port: int, expected: int) -> IngestRun:
    """The daemon's client: AmiConnection -> EventQueue -> a consuming task."""
    pbx = PbxConfig(name="bench", host="127.0.0.1", port=port, username=USER, secret=SECRET)
    queue = EventQueue(EVENT_QUEUE_SIZE)
    tracker = CallTracker(pbx.name, TrackerSettings.from_pbx(pbx))  # as the daemon's pipeline
    connection = AmiConnection(pbx, queue.put, wanted=tracker.wants)
    runner = asyncio.create_task(connection.run(), name="bench-ami")
    count = 0
    first: float | None = None
    cpu = time.process_time()
    loop = asyncio.get_running_loop()
    try:
        # A plain `await queue.get()` (no wait_for: it would add a task per event); the
        # deadline moves on every 1000 events, so a stuck client ends the run STALL s later.
        async with asyncio.timeout(STALL) as deadline:
            while True:
                event = await queue.get()
                if first is None:
                    first = event.received_at
                count += 1
                if event.name == "Cdr" and event.headers.get("UniqueID") == SENTINEL_ID:
                    break
                if not count % 1000:
                    deadline.reschedule(loop.time() + STALL)
        end = time.monotonic()
        cpu = time.process_time() - cpu
    except TimeoutError:
        raise RuntimeError(f"our client stalled after {count} of {expected} events "
                           f"({queue.dropped} dropped)") from None
    finally:
        await connection.close()
        await runner
    if first is None:
        raise RuntimeError("no event reached our client")
    return IngestRun("hangupsms", expected, count - 1, end - first, cpu, queue.dropped)


async def bare_panoramisk(port: int, expected: int) -> IngestRun:
    """panoramisk as its README shows it: a Manager and a callback for every event."""
    done = asyncio.Event()
    marks: list[float] = []
    count = 0

    def on_event(manager: Any, message: Any) -> None:
        nonlocal count
        count += 1
        if count == 1:
            marks.append(time.monotonic())
        if count == expected + 1:  # the sentinel
            marks.append(time.monotonic())
            done.set()

    manager = Manager(host="127.0.0.1", port=port, username=USER, secret=SECRET,
                      loop=asyncio.get_running_loop())
    manager.register_event("*", on_event)
    cpu = time.process_time()
    manager.connect()
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            await done.wait()
        cpu = time.process_time() - cpu
    finally:
        manager.close()
    return IngestRun("panoramisk", expected, count - 1, marks[1] - marks[0], cpu)


async def measure(calls: int, concurrency: int, repeats: int,
                  event_filter: str = "none", *, with_panoramisk: bool = True) -> dict[str, Any]:
    """Alternate the clients on one stream `repeats` times each; medians and their ratio."""
    runs: list[IngestRun] = []
    async with ami_server(calls, concurrency, event_filter=event_filter) as server:
        port, frames = int(server["port"]), int(server["frames"])
        for _ in range(repeats):
            runs.append(await ours(port, frames))
            if with_panoramisk:
                runs.append(await bare_panoramisk(port, frames))
    result: dict[str, Any] = {
        "calls": calls, "events": frames, "bytes": int(server["bytes"]),
        "concurrency": concurrency, "filter": event_filter, "runs": [asdict(r) for r in runs],
    }
    for client in ("hangupsms", "panoramisk"):
        mine = [r for r in runs if r.client == client]
        if mine:
            rate = statistics.median(r.events_per_second for r in mine)
            result[client] = {
                "events_per_second": round(rate),
                "calls_per_second": round(rate * calls / frames, 1),
                "cpu_us_per_event": round(statistics.median(r.cpu_us_per_event for r in mine), 2),
                "dropped": max(r.dropped for r in mine),
                "delivered": min(r.delivered for r in mine),
            }
    if with_panoramisk:
        ours_rate = result["hangupsms"]["events_per_second"]
        result["ratio_vs_panoramisk"] = round(ours_rate / result["panoramisk"]["events_per_second"],
                                              3)
        result["cpu_ratio_vs_panoramisk"] = round(
            result["panoramisk"]["cpu_us_per_event"] / result["hangupsms"]["cpu_us_per_event"], 3)
    return result
