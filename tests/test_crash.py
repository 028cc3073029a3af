"""kill -9 of `hangupsms run` at random points of a 1,000-call replay: nothing lost, nothing twice.

The daemon runs as a child process against the fake AMI server (replaying generated copies
of the lab calls, and writing their CDR rows as Asterisk's cdr_sqlite3_custom would) and
the fake Twilio, and is killed with SIGKILL ten times: eight times at random points of the
AMI stream, twice right after Twilio accepted a message whose answer it never got (more
with HANGUPSMS_CRASH_KILLS). Each
kill loses whatever was in flight: events in socket buffers and memory, a send whose answer
never came. After the last restart, every call must have exactly the messages an unbroken
run would send, at the provider, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest

from hangupsms.cdrlab import CdrWriter, lab_variable_columns
from hangupsms.frames import decode_frame
from hangupsms.replay import AmiReplayServer, ReplayFrame
from hangupsms.synthetic import SyntheticTraffic
from tests.faketwilio import FakeTwilio, Scripted
from tests.lab import SECRET, TRANSCRIPTS, USER, fake_twilio, lab_config, planned_sends

CALLS = 1000
# Ten kills in the suite; `HANGUPSMS_CRASH_KILLS=100 pytest tests/test_crash.py` for more.
KILLS = int(os.environ.get("HANGUPSMS_CRASH_KILLS", "10"))
SEND_KILLS = max(2, KILLS // 5)
STREAM_KILLS = KILLS - SEND_KILLS
SEED = 20261204
PACE = 0.05


def _traffic() -> list[ReplayFrame]:
    """The generated stream, each frame with its delay after the previous one."""
    # a_readonly is a's call seen by a user with fewer read classes: one PBX has one user.
    transcripts = [p for p in TRANSCRIPTS if p.stem != "a_readonly"]
    traffic = SyntheticTraffic(CALLS, concurrency=40, seed=SEED, transcripts=transcripts,
                               distinct_numbers=True, max_gap=0.2)
    frames: list[ReplayFrame] = []
    previous: float | None = None
    for at, raw in traffic.timed_frames():
        delay = 0.0 if previous is None else max(0.0, at - previous)
        frames.append(ReplayFrame(raw.removesuffix(b"\r\n\r\n"), delay))
        previous = at
    return frames


async def _spawn(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hangupsms", "run", "-c", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def _start(server: AmiReplayServer, config: Path, log: Path
                 ) -> asyncio.subprocess.Process:
    """A daemon, once it has logged in."""
    logins = server.logins
    process = await _spawn(config, log)
    await server.wait_until(lambda: server.logins > logins)
    return process


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGKILL)
    await process.wait()


async def _accepted_one_more(twilio: FakeTwilio) -> None:
    """The next create is recorded as accepted, and its answer held back (then the kill)."""
    count = len(twilio.accepted)
    twilio.script.append(Scripted(hang=120.0))
    await twilio.wait_for(count + 1)


@pytest.mark.timeout(300 + 15 * KILLS)
async def test_kill_9_at_random_points_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    frames = _traffic()
    rng = random.Random(SEED)
    span = range(len(frames) // 20, len(frames) * 17 // 20)
    stream_kills = sorted(rng.sample(span, STREAM_KILLS))
    # After these stream kills (early ones: later, every message may have gone out already).
    send_kills = set(rng.sample(range(STREAM_KILLS // 2), SEND_KILLS))
    log = tmp_path / "daemon.log"
    # The calls' own pace, 20 times faster (about 70 calls/s): Asterisk sends as calls
    # happen, so a kill loses what was in flight, not the whole rest of the stream.
    async with fake_twilio() as twilio, AmiReplayServer(
        username=USER, secret=SECRET, cdr=CdrWriter(tmp_path / "cdr.db"), pace=PACE,
    ) as server:
        server.frames = frames
        config = lab_config(
            tmp_path, ami_port=server.port, twilio_url=twilio.url,
            twilio={"rate": 1000, "timeout": 5},
            pbx={"reconnect_min": 0.05, "reconnect_max": 0.2,
                 "cdr": {"sqlite": str(tmp_path / "cdr.db"), "poll_interval": 0.2,
                         "variables": lab_variable_columns()}},
            extra={"agents": {"agent1": {"name": "Agent One"}},
                   # All generated callers share one number range: the guard would hold them.
                   "policy": {"guard": {"per_prefix_hour": 100_000, "hourly": 100_000,
                                        "daily": 1_000_000}}})
        wanted = planned_sends(config, (decode_frame(frame.raw) for frame in frames))
        async with asyncio.timeout(240 + 15 * KILLS):
            for index, cursor in enumerate(stream_kills):
                process = await _start(server, config, log)
                # When the previous run read past this point, the kill comes at its login.
                await server.wait_until(lambda c=cursor: server.cursor >= c)  # type: ignore[misc]
                await _kill(process)
                if index in send_kills:
                    process = await _start(server, config, log)
                    await _accepted_one_more(twilio)
                    await _kill(process)
            process = await _start(server, config, log)
            await server.events_done.wait()
            await twilio.wait_for(sum(wanted.values()))
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert server.logins == STREAM_KILLS + SEND_KILLS + 1
    got = Counter((m.to, m.body) for m in twilio.accepted)
    assert got == wanted, _difference(got, wanted)
    with sqlite3.connect(tmp_path / "h.db") as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state"))
        ends = dict(db.execute("SELECT end_reason, COUNT(*) FROM calls GROUP BY end_reason"))
        calls = db.execute("SELECT COUNT(*), COUNT(DISTINCT linkedid) FROM calls").fetchone()
    assert calls == (CALLS, CALLS)
    assert set(states) <= {"sent", "skipped"}, states
    assert states["sent"] == sum(wanted.values())
    # The kills did cut calls: some were finished from their CDRs, some rebuilt from them.
    assert ends.get("ended_while_disconnected", 0) + ends.get("from_cdr", 0) > 0, ends


def _difference(got: Counter[tuple[str, str]], wanted: Counter[tuple[str, str]]) -> str:
    extra, missing = got - wanted, wanted - got
    return f"{sum(extra.values())} extra {list(extra)[:5]}, {sum(missing.values())} missing " \
           f"{list(missing)[:5]}"
