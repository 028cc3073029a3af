"""Where the time goes: cProfile of the ingest and end-to-end runs, by function and by file.

cProfile slows Python code about twofold and builtins hardly at all, so shares are
indicative; `tottime` is time in the function itself, `cumtime` includes what it calls.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import sysconfig
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import endtoend, ingest
from bench.peers import ROOT, ami_server

_STDLIB = Path(sysconfig.get_paths()["stdlib"])


def where(filename: str) -> str:
    """A short, machine-independent name for a profiled function's file."""
    if filename == "~":
        return "{built-in}"
    posix = Path(filename).as_posix()
    if "site-packages/" in posix:
        return posix.split("site-packages/", 1)[1]
    for base, prefix in ((ROOT, ""), (_STDLIB, "stdlib/")):
        if Path(filename).is_relative_to(base):
            return prefix + Path(filename).relative_to(base).as_posix()
    return posix


def summary(profiler: cProfile.Profile, units: int, unit: str, top: int = 25,
            extra: Sequence[cProfile.Profile] = ()) -> dict[str, Any]:
    """The `top` functions by own time and the files by own time, per `unit` (event, call)."""
    stats = pstats.Stats(profiler)
    for other in extra:
        stats.add(other)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    functions = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:top]
    files: dict[str, float] = defaultdict(float)
    for (filename, _, _), entry in raw.items():
        files[where(filename)] += entry[2]
    return {
        "profiled_seconds": round(total, 3), "units": units, "unit": unit,
        "functions": [
            {"function": f"{where(file)}:{line}({name})", "calls": entry[1],
             "tottime": round(entry[2], 3), "cumtime": round(entry[3], 3),
             "share": round(entry[2] / total, 3),
             f"us_per_{unit}": round(entry[2] / units * 1e6, 2)}
            for (file, line, name), entry in functions
        ],
        "files": [
            {"file": name, "tottime": round(seconds, 3), "share": round(seconds / total, 3)}
            for name, seconds in sorted(files.items(), key=lambda kv: kv[1], reverse=True)[:15]
        ],
    }


async def profile_ingest(calls: int, concurrency: int) -> dict[str, Any]:
    """Our client alone (`ingest.ours`) on the unfiltered stream, under cProfile."""
    async with ami_server(calls, concurrency) as server:
        profiler = cProfile.Profile()
        profiler.enable()
        run = await ingest.ours(int(server["port"]), int(server["frames"]))
        profiler.disable()
    return summary(profiler, run.events, "event")


class ThreadProfiles:
    """A cProfile of every thread started while installed (aiosqlite runs SQLite in one).

    cProfile only sees the thread that enabled it, so each new thread enables its own
    profiler on its first call; `stop()` collects them once the threads have finished.
    """

    def __init__(self) -> None:
        self.profilers: list[tuple[str, cProfile.Profile]] = []  # (thread name, profiler)

    def install(self) -> None:
        threading.setprofile(self._start)

    def _start(self, frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile()
        self.profilers.append((threading.current_thread().name, profiler))
        profiler.enable()  # replaces this hook for the rest of the thread

    def uninstall(self) -> None:
        threading.setprofile(None)


async def profile_end_to_end(calls: int, concurrency: int) -> dict[str, Any]:
    """The blast end-to-end run under cProfile: the event loop, and apart, SQLite's thread."""
    profiler = cProfile.Profile()
    threads = ThreadProfiles()
    threads.install()
    try:
        figures = await endtoend.run(calls, concurrency, profiler=profiler)
    finally:
        threads.uninstall()
    result = summary(profiler, calls, "call") | {
        "calls_per_second_profiled": figures["calls_per_second"]}
    # asyncio's child watcher threads only wait for the fake peers to exit: left out.
    workers = [(name, p) for name, p in threads.profilers if "waitpid" not in name]
    if workers:
        result["other_threads"] = summary(workers[0][1], calls, "call",
                                          extra=[p for _, p in workers[1:]])
        result["other_threads"]["threads"] = [name for name, _ in workers]
    return result
