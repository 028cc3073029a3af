"""The intake journal: a restart in the middle of calls resumes them; nothing is texted twice."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from structlog.testing import capture_logs

from hangupsms.ami import ConnState
from hangupsms.config import load_config
from hangupsms.daemon import Daemon
from hangupsms.replay import AmiReplayServer
from tests.faketwilio import FakeTwilio
from tests.test_calls import FIXTURES

TRANSCRIPTS = sorted(FIXTURES.glob("*.ami"))
EXPECTED: dict[str, list[dict[str, Any]]] = yaml.safe_load(
    (FIXTURES / "expected-messages.yaml").read_text(encoding="utf-8")
)
USER, SECRET = "hangupsms", "labsecret"
SID = "AC00000000000000000000000000000000"


def _config(tmp_path: Path, ami_port: int, twilio_url: str, name: str, **pbx: float) -> Path:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["pbx"][0].update(port=ami_port, **pbx)
    raw["providers"]["twilio"].update(api_url=twilio_url, rate=100)
    raw["database"] = str(tmp_path / "h.db")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _expected_sent() -> Counter[tuple[str, str]]:
    return Counter(
        (m["to"], m["body"]) for calls in EXPECTED.values() for c in calls for m in c["sent"]
    )


async def test_a_restart_in_the_middle_of_calls_resumes_them_from_the_journal(
    tmp_path: Path,
) -> None:
    twilio = await FakeTwilio(SID, "reference-token").start()
    try:
        # The server hangs up after 500 events; the first daemon does not come back (a
        # long reconnect delay) and is stopped there, mid-call. The second one resumes.
        async with AmiReplayServer(TRANSCRIPTS, username=USER, secret=SECRET,
                                   drop_after_frames=500) as server:
            first = Daemon(load_config(_config(tmp_path, server.port, twilio.url, "1.yaml",
                                               reconnect_min=60, reconnect_max=60)))
            runner = asyncio.create_task(first.run())
            async with asyncio.timeout(30):
                await server.wait_until(lambda: server.cursor >= 500 and not server.clients)
                await first.wait_until(_queue_empty(first))
            first.stop.set()
            await runner
            kept = _journal_rows(tmp_path / "h.db")
            second = Daemon(load_config(_config(tmp_path, server.port, twilio.url, "2.yaml")))
            with capture_logs() as logs:
                runner = asyncio.create_task(second.run())
                try:
                    async with asyncio.timeout(30):
                        await server.events_done.wait()
                        await second.wait_drained()
                finally:
                    second.stop.set()
                    await runner
    finally:
        await twilio.stop()
    assert kept > 0  # the first daemon stopped with calls live: their events were kept
    (restored,) = [e for e in logs if e["event"] == "journal.restored"]
    assert restored["calls_live"] >= 1
    assert Counter((m.to, m.body) for m in twilio.accepted) == _expected_sent()
    assert _journal_rows(tmp_path / "h.db") == 0  # every call recorded: nothing left to keep
    with sqlite3.connect(tmp_path / "h.db") as db:
        ends = dict(db.execute("SELECT end_reason, COUNT(*) FROM calls GROUP BY end_reason"))
    assert ends == {"linkedid_end": len({c["linkedid"] for v in EXPECTED.values() for c in v})}


def _journal_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM journal").fetchone()[0])


def _queue_empty(daemon: Daemon) -> Any:
    """The link is down (everything it carried has been read) and every event consumed."""
    async def empty() -> bool:
        (connection,) = daemon.connections
        return connection.state is not ConnState.READY and daemon.queue.qsize() == 0
    return empty
