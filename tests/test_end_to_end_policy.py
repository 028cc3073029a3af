"""`hangupsms run` as a subprocess under the policy: a fraud burst, a STOP during deferral."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hangupsms.policycli import EXIT_TRIPPED
from hangupsms.replay import AmiReplayServer
from hangupsms.synthetic import SyntheticTraffic
from tests.faketwilio import FakeTwilio
from tests.lab import FIXTURES, SECRET, USER, DaemonLog, fake_twilio, lab_config
from tests.lab import start_daemon_process as start
from tests.policylab import FRENCH_MOBILE

BURST = 200
PER_PREFIX = 20
MANAGER = "+447700900777"


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with fake_twilio() as server:
        yield server


def _edit(config: Path, change: Any) -> Path:
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    change(raw)
    config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), "utf-8")
    return config


def _burst(tmp_path: Path, range_: bytes = b"+447700900") -> Path:
    """200 copies of a.ami, each from its own number of one range (+44 7700 900xxx)."""
    traffic = SyntheticTraffic(BURST, concurrency=25, seed=4, transcripts=[FIXTURES / "a.ami"],
                               distinct_numbers=True)
    stream = b"".join(traffic.frames()).replace(b"+447700900", range_)
    path = tmp_path / "burst.ami"
    path.write_bytes(b"Asterisk Call Manager/11.0.0\r\n" + stream)
    return path


def _foreign_and_anywhere(raw: dict[str, Any], guard: dict[str, int]) -> None:
    """A US business that texts any region: the burst's +44 numbers are foreign to it."""
    raw["phone"] = {"default_region": "US", "allowed_regions": [], "number_check": "possible"}
    raw["policy"] = {"guard": guard}


async def _stop(process: asyncio.subprocess.Process, log: DaemonLog) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        await log.until(lambda _: bool(log.events("daemon.stopped")))
        return await process.wait()


async def _cli(*argv: str) -> tuple[int, str]:
    """`hangupsms ARGV` as its own process, as a sysadmin runs it next to the daemon."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hangupsms", "--log-level", "warning", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    return await process.wait(), out.decode("utf-8")


def _states(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall())


async def test_a_burst_from_one_foreign_prefix_trips_the_guard_and_nothing_passes_it(
        tmp_path: Path, twilio: FakeTwilio) -> None:
    guard = {"prefix_digits": 6, "per_prefix_hour": PER_PREFIX}
    async with AmiReplayServer([_burst(tmp_path)], username=USER, secret=SECRET) as ami:
        config = _edit(lab_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url,
                                  twilio={"rate": 1000}),
                       lambda raw: _foreign_and_anywhere(raw, guard))
        process, log = await start(config)
        try:
            async with asyncio.timeout(90):
                await log.until(lambda _: len(log.events("call.completed")) >= BURST)
                decided = ("sms.sent", "sms.policy")
                await log.until(lambda _: sum(len(log.events(e)) for e in decided) >= BURST)
        finally:
            returncode = await _stop(process, log)
    assert returncode == 0
    assert len(twilio.accepted) == PER_PREFIX
    assert {m.to[:7] for m in twilio.accepted} == {"+447700"}
    assert _states(tmp_path / "h.db") == {"sent": PER_PREFIX, "held": BURST - PER_PREFIX}
    (tripped,) = log.events("policy.guard_tripped")
    assert "messages to prefix +447700 in the last hour (limit 20)" in tripped["reason"]
    code, out = await _cli("guard", "status", "-c", str(config))
    assert code == EXIT_TRIPPED
    assert f"{BURST - PER_PREFIX} message(s) held" in out


async def test_a_burst_from_premium_rate_numbers_sends_nothing(
        tmp_path: Path, twilio: FakeTwilio) -> None:
    burst = _burst(tmp_path, b"+449091234")  # UK premium rate (09…)
    async with AmiReplayServer([burst], username=USER, secret=SECRET) as ami:
        config = _edit(lab_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url),
                       lambda raw: _foreign_and_anywhere(raw, {}))
        process, log = await start(config)
        try:
            async with asyncio.timeout(90):
                await log.until(lambda _: len(log.events("call.completed")) >= BURST)
        finally:
            returncode = await _stop(process, log)
    assert returncode == 0
    assert twilio.accepted == []
    assert _states(tmp_path / "h.db") == {"skipped": BURST}
    reasons = {e["skipped"][0].split("is not textable: ")[1]
               for e in log.events("call.completed")}
    assert reasons == {"premium-rate number"}
    assert (await _cli("guard", "status", "-c", str(config)))[0] == 0


async def test_a_stop_added_while_a_text_waits_in_deferral_stops_it(
        tmp_path: Path, twilio: FakeTwilio) -> None:
    """c.ami: a missed call from a French mobile; its text and the manager's alert wait 1 h."""
    def delay_missed_texts(raw: dict[str, Any]) -> None:
        for rule in raw["rules"]:
            if rule["name"] in ("missed", "missed-alert"):
                rule["send"]["delay"] = "1h"

    async with AmiReplayServer([FIXTURES / "c.ami"], username=USER, secret=SECRET) as ami:
        config = _edit(lab_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url),
                       delay_missed_texts)
        process, log = await start(config)
        try:
            async with asyncio.timeout(60):
                await log.until(lambda _: bool(log.events("call.completed")))
                assert _states(tmp_path / "h.db") == {"deferred": 2}
                assert await _cli("optout", "-c", str(config), "add", FRENCH_MOBILE,
                                  "--reason", "STOP") == (0, f"{FRENCH_MOBILE}: suppressed\n")
                # The hour passes: both messages come due.
                with sqlite3.connect(tmp_path / "h.db") as db:
                    db.execute("UPDATE messages SET send_at = 0 WHERE state = 'deferred'")
                await log.until(lambda _: bool(log.events("sms.sent"))
                                and bool(log.events("sms.policy")))
        finally:
            returncode = await _stop(process, log)
    assert returncode == 0
    assert [m.to for m in twilio.accepted] == [MANAGER]
    (decision,) = log.events("sms.policy")
    assert (decision["verdict"], decision["reason"]) == ("skip", "opted out (suppression list)")
    assert _states(tmp_path / "h.db") == {"sent": 1, "skipped": 1}
