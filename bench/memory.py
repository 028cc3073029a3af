"""Memory: the tracker's resident size over many calls, in a process of its own.

`python -m bench.memory --calls N --every M` feeds N generated calls to one CallTracker and
prints a JSON line every M finished calls (RSS, peak RSS, live calls, Python objects,
tracker time per event). The tracker is the daemon's only per-call state in memory; 1M
calls through the whole daemon (SQLite and all) would take hours here. Events reach the
tracker as header dicts straight from the generator, parser skipped (its cost is in the
ingest figures), filtered as the recommended AMI `eventfilter` would (bench/traffic.py
"minimal"): what it drops, the tracker ignores, so its state is the same.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.machine import peak_rss_mb, rss_mb
from bench.peers import ROOT
from bench.traffic import traffic
from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.config import PbxConfig
from hangupsms.models import AmiEvent

LAB = PbxConfig(name="bench", inbound_contexts=("from-pstn",),
                internal_contexts=("from-internal",))


def checkpoint(calls: int, events: int, tracker: CallTracker, tracker_seconds: float,
               started: float, cpu: float) -> dict[str, Any]:
    return {
        "calls": calls, "events": events, "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb(),
        "live_calls": tracker.live_calls(), "objects": len(gc.get_objects()),
        "tracker_us_per_event": round(tracker_seconds / max(events, 1) * 1e6, 2),
        "tracker_ms_per_call": round(tracker_seconds / max(calls, 1) * 1e3, 3),
        "cpu_ms_per_call": round((time.process_time() - cpu) / max(calls, 1) * 1e3, 3),
        "elapsed": round(time.monotonic() - started, 1),
    }


def feed(calls: int, every: int, concurrency: int) -> None:
    stream = traffic(calls, concurrency, event_filter="minimal")
    tracker = CallTracker("bench", TrackerSettings.from_pbx(LAB))
    gc.collect()
    print(json.dumps({"calls": 0, "baseline_rss_mb": rss_mb(), "concurrency": concurrency}),
          flush=True)
    done = events = 0
    spent = 0.0
    clock = time.perf_counter
    started, cpu = time.monotonic(), time.process_time()
    target = every
    at = 0.0
    for at, headers in stream.timed_headers():
        events += 1
        event = AmiEvent("bench", headers["Event"], headers, at)
        before = clock()
        finished = tracker.feed(event, at)
        spent += clock() - before
        if finished:
            done += len(finished)
            if done >= target:
                target += every
                print(json.dumps(checkpoint(done, events, tracker, spent, started, cpu)),
                      flush=True)
    done += len(tracker.expire(at + 3600.0))
    final = checkpoint(done, events, tracker, spent, started, cpu)
    print(json.dumps({**final, "final": True}), flush=True)


async def measure(calls: int, every: int, concurrency: int) -> dict[str, Any]:
    """Run the feed in a fresh interpreter; its checkpoints, and RSS growth after the first."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.memory", "--calls", str(calls), "--every", str(every),
        "--concurrency", str(concurrency), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    if process.stdout is None:
        raise RuntimeError("no pipe")
    lines = [json.loads(line) async for line in process.stdout]
    if await process.wait() != 0 or not lines or not lines[-1].get("final"):
        raise RuntimeError(f"bench.memory failed: {lines[-1:]}")
    points = [p for p in lines[1:] if not p.get("final")]
    final = lines[-1]
    first = points[0] if points else final
    return {
        "calls": final["calls"], "concurrency": concurrency,
        "baseline_rss_mb": lines[0]["baseline_rss_mb"], "peak_rss_mb": final["peak_rss_mb"],
        "rss_growth_mb_after_first_checkpoint": round(final["rss_mb"] - first["rss_mb"], 1),
        "objects_growth_after_first_checkpoint": final["objects"] - first["objects"],
        "tracker_us_per_event": final["tracker_us_per_event"],
        "tracker_ms_per_call": final["tracker_ms_per_call"],
        "checkpoints": [*points, final],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--every", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args(argv)
    feed(args.calls, args.every, args.concurrency)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
