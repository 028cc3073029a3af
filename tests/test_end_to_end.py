"""`hangupsms run` as a subprocess: fake AMI replaying real calls, fake Twilio, real SQLite."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hangupsms.replay import AmiReplayServer
from tests.faketwilio import FakeTwilio
from tests.lab import EXPECTED_MESSAGES as EXPECTED
from tests.lab import (
    SECRET,
    TRANSCRIPTS,
    USER,
    expected_linkedids,
    expected_sent,
    fake_twilio,
    lab_config,
    start_daemon_process,
)


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with fake_twilio() as server:
        yield server


async def test_run_sends_exactly_the_expected_messages_and_stops_on_sigterm(
    tmp_path: Path, twilio: FakeTwilio
) -> None:
    linkedids = expected_linkedids()
    wanted = expected_sent()
    async with AmiReplayServer(TRANSCRIPTS, username=USER, secret=SECRET) as ami:
        config = lab_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url)
        process, log = await start_daemon_process(config)
        try:
            async with asyncio.timeout(60):
                await log.until(lambda _: ami.events_done.is_set())
                await log.until(
                    lambda _: {e["linkedid"] for e in log.events("call.completed")} >= linkedids
                )
                await log.until(lambda _: len(log.events("sms.sent")) >= sum(
                    wanted.values()))
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            await log.until(lambda _: bool(log.events("daemon.stopped")))
            returncode = await process.wait()
    assert returncode == 0
    assert Counter((m.to, m.body) for m in twilio.accepted) == wanted
    assert not [e for e in log.lines if e.get("level") in ("error", "critical")]
    _assert_database(tmp_path / "h.db", linkedids)


def _assert_database(path: Path, linkedids: set[str]) -> None:
    with sqlite3.connect(path) as db:
        calls = {row[0]: row[1] for row in db.execute("SELECT linkedid, id FROM calls")}
        assert set(calls) == linkedids
        rows = db.execute(
            "SELECT c.linkedid, m.rule, m.to_number, m.body, m.state, m.reason"
            " FROM messages m JOIN calls c ON c.id = m.call_id"
        ).fetchall()
    found = Counter((r[0], r[1], r[4]) for r in rows)
    wanted: Counter[tuple[str, str, str]] = Counter()
    for calls_ in EXPECTED.values():
        for call in calls_:
            wanted.update((call["linkedid"], m["rule"], "sent") for m in call["sent"])
            wanted.update((call["linkedid"], s["rule"], "skipped") for s in call["skipped"])
    assert found == wanted
    reasons = {(r[0], r[1]): r[5] for r in rows if r[4] == "skipped"}
    for calls_ in EXPECTED.values():
        for call in calls_:
            for skipped in call["skipped"]:
                assert reasons[(call["linkedid"], skipped["rule"])].startswith(skipped["why"])
