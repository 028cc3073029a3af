"""The intake journal: a restart in the middle of calls resumes them; nothing is texted twice."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from structlog.testing import capture_logs

from hangupsms.ami import ConnState
from hangupsms.config import load_config
from hangupsms.daemon import JOURNAL_FLUSH_AFTER, JOURNAL_TRIM_EVERY, Daemon, JournalSchedule
from hangupsms.models import AmiEvent
from hangupsms.pipeline import CallPipeline
from hangupsms.replay import AmiReplayServer
from hangupsms.store import Store
from tests.lab import (
    SECRET,
    TRANSCRIPTS,
    USER,
    expected_linkedids,
    expected_sent,
    fake_twilio,
    lab_config,
    running_daemon,
)


async def test_a_restart_in_the_middle_of_calls_resumes_them_from_the_journal(
    tmp_path: Path,
) -> None:
    # The server hangs up after 500 events; the first daemon does not come back (a long
    # reconnect delay) and is stopped there, mid-call. The second one resumes.
    async with fake_twilio() as twilio, AmiReplayServer(
        TRANSCRIPTS, username=USER, secret=SECRET, drop_after_frames=500
    ) as server:
        first = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url, name="1.yaml",
                           pbx={"reconnect_min": 60, "reconnect_max": 60}, twilio={"rate": 100})
        async with running_daemon(first) as daemon, asyncio.timeout(30):
            await server.wait_until(lambda: server.cursor >= 500 and not server.clients)
            await daemon.wait_until(_link_down_and_queue_empty(daemon))
        kept = _journal_rows(tmp_path / "h.db")
        second = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url,
                            name="2.yaml", twilio={"rate": 100})
        with capture_logs() as logs:
            async with running_daemon(second) as daemon, asyncio.timeout(30):
                await server.events_done.wait()
                await daemon.wait_drained()
    assert kept > 0  # the first daemon stopped with calls live: their events were kept
    (restored,) = [e for e in logs if e["event"] == "journal.restored"]
    assert restored["calls_live"] >= 1
    assert Counter((m.to, m.body) for m in twilio.accepted) == expected_sent()
    assert _journal_rows(tmp_path / "h.db") == 0  # every call recorded: nothing left to keep
    with sqlite3.connect(tmp_path / "h.db") as db:
        ends = dict(db.execute("SELECT end_reason, COUNT(*) FROM calls GROUP BY end_reason"))
    assert ends == {"linkedid_end": len(expected_linkedids())}


async def test_the_journal_is_written_on_a_short_timer_and_trimmed_at_most_once_a_second(
    tmp_path: Path,
) -> None:
    cfg = load_config(lab_config(tmp_path, ami_port=1, twilio_url="http://127.0.0.1:1"))
    store = await Store.open(cfg.database)
    pipeline, schedule = CallPipeline(cfg, store), JournalSchedule()
    db = tmp_path / "h.db"

    async def pass_at(now: float, *, events: int = 0) -> None:
        """One consumer pass: `events` events of an unknown call, a pass that recorded."""
        for _ in range(events):
            pipeline.feed(AmiEvent(cfg.pbx[0].name, "Hangup", {"Linkedid": "9.9"}, now), now)
        await pipeline.record([])  # nothing live: a trim would drop every row
        await schedule.sync_when_due(pipeline, now)

    try:
        await pass_at(100.0, events=2)
        await pass_at(100.0 + JOURNAL_FLUSH_AFTER / 2, events=1)
        assert _journal_rows(db) == 0  # not on every pass: after its interval
        await pass_at(100.0 + JOURNAL_FLUSH_AFTER)
        assert pipeline.journal is not None and pipeline.journal.written == 3
        assert _journal_rows(db) == 0  # written, then trimmed: no call needs them
        await pass_at(100.2, events=1)
        await pass_at(100.2 + JOURNAL_FLUSH_AFTER)
        assert _journal_rows(db) == 1  # written; the next trim waits for its second
        await pass_at(100.0 + JOURNAL_FLUSH_AFTER + JOURNAL_TRIM_EVERY, events=1)
        await pass_at(100.0 + 2 * JOURNAL_FLUSH_AFTER + JOURNAL_TRIM_EVERY)
        assert _journal_rows(db) == 0
        assert pipeline.journal.written == 5
    finally:
        await store.close()


def _journal_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM journal").fetchone()[0])


def _link_down_and_queue_empty(daemon: Daemon) -> Callable[[], Awaitable[bool]]:
    """The link is down (everything it carried has been read) and every event consumed."""
    async def done() -> bool:
        (connection,) = daemon.connections
        return connection.state is not ConnState.READY and daemon.queue.qsize() == 0
    return done
