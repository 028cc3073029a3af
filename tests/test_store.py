"""The SQLite store on a real file: one transaction per call, unique messages, migrations."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from hangupsms.models import (
    EMPTY,
    CompletedCall,
    Direction,
    Disposition,
    Encoding,
    EndReason,
    MessageState,
    PlannedMessage,
    RenderedText,
)
from hangupsms.schema import SCHEMA_VERSION
from hangupsms.store import Store, StoreError


def _call(linkedid: str = "1796413068.0") -> CompletedCall:
    return CompletedCall(
        pbx="lab", linkedid=linkedid, direction=Direction.INBOUND,
        customer_number="+447700900123", customer_name='Zoë; DROP TABLE "x"',
        presentation_restricted=False, did="4000", queue="support", answered=True,
        disposition=Disposition.ANSWERED, queue_abandoned=False, agent_id="agent1",
        agent_name="Agent One", agents_involved=("agent1",), talk_seconds=2, wait_seconds=1,
        variables=EMPTY, transferred=False, started_at=1796413068.7, ended_at=1796413072.1,
        end_reason=EndReason.LINKEDID_END, linkedid_end_seen=True,
    )


def _planned() -> list[PlannedMessage]:
    body = RenderedText("Thanks for calling, Zoë.", Encoding.GSM7, 1)
    return [
        PlannedMessage("thanks", "customer", "+447700900123", "twilio", "thanks", body),
        PlannedMessage("alert", "+447700900777", "+447700900777", "twilio", "alert", None,
                       skip_reason="customer number 'x' is not textable"),
    ]


async def test_call_and_messages_are_recorded_once(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "h.db")
    try:
        assert await store.record_call(_call(), "+447700900123", _planned(), now=10.0)
        assert not await store.record_call(_call(), "+447700900123", _planned(), now=11.0)
        rows = await store.history()
        assert sorted((r.rule, r.state, r.reason) for r in rows) == [
            ("alert", "skipped", "customer number 'x' is not textable"),
            ("thanks", "pending", None),
        ]
        assert len(await store.calls()) == 1
        assert (await store.calls())[0]["customer_name"] == 'Zoë; DROP TABLE "x"'
    finally:
        await store.close()


async def test_calls_recorded_together_each_keep_their_messages_and_are_recorded_once(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "h.db")
    try:
        assert await store.record_call(_call("1.0"), "+447700900123", _planned(), now=10.0)
        fresh = await store.record_calls([
            (_call("2.0"), "+447700900123", _planned()), (_call("1.0"), None, _planned()),
            (_call("3.0"), None, []), (_call("2.0"), None, _planned()),
        ], now=11.0)
        assert fresh == [True, False, True, False]
        calls = {c["linkedid"]: c for c in await store.calls()}
        assert set(calls) == {"1.0", "2.0", "3.0"}
        assert calls["1.0"]["customer_e164"] == "+447700900123"  # not the replay's None
        with sqlite3.connect(tmp_path / "h.db") as db:
            per_call = dict(db.execute("SELECT c.linkedid, COUNT(m.id) FROM calls c LEFT JOIN"
                                       " messages m ON m.call_id = c.id GROUP BY c.linkedid"))
        assert per_call == {"1.0": 2, "2.0": 2, "3.0": 0}
    finally:
        await store.close()


async def test_claim_moves_due_pending_to_sending_and_finish_records_attempt(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "h.db")
    try:
        await store.record_call(_call(), "+447700900123", _planned(), now=10.0)
        assert await store.claim_due(now=9.0) == []
        claimed = await store.claim_due(now=10.0)
        assert [(m.rule, m.to, m.call_linkedid, m.attempts) for m in claimed] == [
            ("thanks", "+447700900123", "1796413068.0", 1)
        ]
        assert await store.claim_due(now=10.0) == []
        await store.finish(claimed[0].id, MessageState.SENT, 12.0, outcome="accepted",
                           provider_id="SM1")
        assert await store.counts_by_state() == {"sent": 1, "skipped": 1}
        rows = await store.history(number="+447700900123", linkedid="1796413068.0")
        # By number: messages to it and messages about calls from it.
        assert sorted((r.rule, r.state, r.provider_id, r.attempts) for r in rows) == [
            ("alert", "skipped", None, 0), ("thanks", "sent", "SM1", 1)
        ]
        assert [r.rule for r in await store.history(number="+447700900777")] == ["alert"]
    finally:
        await store.close()


async def test_rows_left_sending_by_a_crash_become_unknown_not_resent(tmp_path: Path) -> None:
    """The message whose request had started is checked; those only claimed are requeued."""
    path = tmp_path / "h.db"
    store = await Store.open(path)
    await store.record_call(_call(), "+447700900123", _planned(), now=10.0)
    await store.record_call(_call("1796413068.9"), "+447700900123", _planned(), now=10.0)
    first, second = await store.claim_due(now=10.0)
    await store.begin_request(first.id, now=11.0)
    await store.close()
    store = await Store.open(path)
    try:
        assert await store.recover_interrupted(now=20.0) == 1
        [again] = await store.claim_due(now=30.0)
        assert (again.id, again.attempts) == (second.id, 1)  # its claim was undone
        assert (await store.counts_by_state())["unknown"] == 1
    finally:
        await store.close()


async def test_database_newer_than_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this"):
        await Store.open(path)


async def test_wal_and_full_sync_are_set(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "h.db")
    try:
        with sqlite3.connect(tmp_path / "h.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        await store.close()


async def test_retention_purges_old_finished_calls_and_keeps_waiting_ones(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "h.db")
    try:
        old_done = dataclasses.replace(_call("1.1"), ended_at=1000.0)
        old_waiting = dataclasses.replace(_call("1.2"), ended_at=1000.0)
        recent = dataclasses.replace(_call("1.3"), ended_at=5000.0)
        for call in (old_done, old_waiting, recent):
            await store.record_call(call, "+447700900123", _planned(), now=10.0)
        (first, *_) = await store.claim_due(now=10.0, limit=1)
        await store.finish(first.id, MessageState.SENT, 11.0, outcome="accepted")
        # The other two calls' `thanks` messages are still pending: old_waiting must stay.
        done_call = (await store.calls())[0]
        assert done_call["linkedid"] == "1.1"
        assert await store.purge_before(2000.0) == (1, 2)
        assert [c["linkedid"] for c in await store.calls()] == ["1.2", "1.3"]
        assert await store.attempts(first.id) == []
    finally:
        await store.close()
