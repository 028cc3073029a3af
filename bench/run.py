"""`python -m bench [--quick] [--only SECTION ...]`: every benchmark, one JSON, one table."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import io
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import endtoend, ingest, memory, profiles, stages
from bench.machine import load_average, machine, source_version
from bench.peers import ROOT
from bench.report import table, verdicts
from hangupsms import logs

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
STEADY_RATE = 50.0  # calls/s: the latency point
KEPT_UP_DRAIN = 1.0  # s from the last call's end to its message: more means a backlog


@dataclass(frozen=True, slots=True)
class Plan:
    """How much traffic each section gets."""

    ingest_calls: int
    ingest_repeats: int
    blast_calls: int
    latency_seconds: float
    memory_calls: int
    memory_every: int
    profile_calls: int
    concurrency: int = 200


PLANS = {
    "quick": Plan(ingest_calls=500, ingest_repeats=1, blast_calls=120, latency_seconds=3.0,
                  memory_calls=5_000, memory_every=1_000, profile_calls=60),
    "full": Plan(ingest_calls=2_000, ingest_repeats=3, blast_calls=800, latency_seconds=30.0,
                 memory_calls=1_000_000, memory_every=100_000, profile_calls=300),
}
SECTIONS = ("ingest", "endtoend", "latency", "memory", "stages", "profile")


async def run_ingest(plan: Plan, out: dict[str, Any]) -> None:
    out["ingest"] = await ingest.measure(plan.ingest_calls, plan.concurrency,
                                         plan.ingest_repeats)
    out["ingest_filtered"] = {
        name: await ingest.measure(plan.ingest_calls, plan.concurrency, plan.ingest_repeats,
                                   name, with_panoramisk=False)
        for name in ("tracked", "minimal")
    }


async def run_endtoend(plan: Plan, out: dict[str, Any]) -> None:
    out["endtoend"] = await endtoend.run(plan.blast_calls, plan.concurrency)
    out["endtoend_filtered"] = await endtoend.run(plan.blast_calls, plan.concurrency,
                                                  event_filter="minimal")


async def run_latency(plan: Plan, out: dict[str, Any]) -> None:
    maximum = out.get("endtoend", {}).get("calls_per_second")
    if maximum is None:
        maximum = (await endtoend.run(plan.blast_calls, plan.concurrency))["calls_per_second"]
    points = {"steady_50": STEADY_RATE, "at_max": float(maximum)}
    out["latency"] = {}
    for name, rate in points.items():
        calls = max(10, round(rate * plan.latency_seconds))
        figures = await endtoend.run(calls, endtoend.paced_concurrency(rate), rate=rate)
        figures["kept_up"] = figures["drain_seconds"] <= KEPT_UP_DRAIN
        out["latency"][name] = figures


async def run_memory(plan: Plan, out: dict[str, Any]) -> None:
    out["memory"] = await memory.measure(plan.memory_calls, plan.memory_every,
                                         plan.concurrency)


async def run_profile(plan: Plan, out: dict[str, Any]) -> None:
    out["profile"] = {
        "ingest": await profiles.profile_ingest(plan.ingest_calls // 2, plan.concurrency),
        "endtoend": await profiles.profile_end_to_end(plan.profile_calls, plan.concurrency),
    }


async def run_stages(plan: Plan, out: dict[str, Any]) -> None:
    out["stages"] = await stages.measure(plan.profile_calls)


RUNNERS: dict[str, Callable[[Plan, dict[str, Any]], Awaitable[None]]] = {
    "ingest": run_ingest, "endtoend": run_endtoend, "latency": run_latency,
    "memory": run_memory, "stages": run_stages, "profile": run_profile,
}


async def run_all(mode: str, sections: Sequence[str]) -> dict[str, Any]:
    plan = PLANS[mode]
    results: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for section in sections:
        started, load = time.monotonic(), load_average()
        print(f"bench: {section} ...", flush=True)
        await RUNNERS[section](plan, results)
        timings[section] = {"seconds": round(time.monotonic() - started, 1),
                            "load_before": load, "load_after": load_average()}
    return {
        "mode": mode, "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(), "source": source_version(ROOT), "plan": dataclasses.asdict(plan),
        "sections": timings,
        "results": results, "targets": verdicts(results),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small traffic, under a minute")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args(argv)
    sections = [s for s in SECTIONS if args.only is None or s in args.only]
    if args.quick and args.only is None:
        sections.remove("profile")
    logs.configure("warning", stream=io.StringIO())  # each run configures its own log file
    report = asyncio.run(run_all("quick" if args.quick else "full", sections))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                           encoding="utf-8")
    print(table(report))
    print(f"bench: results in {args.output}")
    return 0
