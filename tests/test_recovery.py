"""Ambiguous and interrupted sends are resolved by asking FakeTwilio, never by a blind resend."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hangupsms.models import SendStatus
from hangupsms.schema import MIGRATIONS
from hangupsms.store import AttemptRow, Store
from tests.faketwilio import Scripted
from tests.outboxrig import BODY, FROM, TO, Rig, open_rig

OTHER = "+447700900456"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_rig(tmp_path) as rig:
        yield rig


async def _post_then_crash(rig: Rig, *, reach_twilio: bool) -> int:
    """Claim the one due message, maybe POST it, then die before recording the outcome."""
    message_id = await rig.add_message()
    [claimed] = await rig.store.claim_due(rig.clock())
    await rig.store.begin_request(claimed.id, rig.clock())  # as the sender does
    if reach_twilio:
        assert (await rig.provider.send(claimed)).status is SendStatus.ACCEPTED
    rig.clock.advance(2.0)
    await rig.crash()
    return message_id


async def test_crash_after_twilio_accepted_marks_sent_without_a_second_post(rig: Rig) -> None:
    message_id = await _post_then_crash(rig, reach_twilio=True)
    recovered_at = rig.clock()
    assert await rig.store.recover_interrupted(recovered_at) == 1
    assert (rig.row(message_id)["state"], rig.row(message_id)["send_at"]) == (
        "unknown", recovered_at)
    dispatcher = rig.dispatcher(lookup_settle=10.0)
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["provider_id"]) == ("sent", rig.fake.accepted[0].sid)
    assert rig.fake.requests == 1
    assert len(rig.fake.accepted) == 1
    attempts = await rig.store.attempts(message_id)
    assert attempts[0] == AttemptRow(
        at=recovered_at, outcome="interrupted", error_code=None,
        detail="interrupted while sending; the provider is checked before any resend",
    )
    assert [a.outcome for a in attempts] == ["interrupted", "lookup_found"]


async def test_crash_before_twilio_received_resends_exactly_once_after_settle(rig: Rig) -> None:
    message_id = await _post_then_crash(rig, reach_twilio=False)
    recovered_at = rig.clock()
    await rig.store.recover_interrupted(recovered_at)
    dispatcher = rig.dispatcher(lookup_settle=10.0)
    await dispatcher.drain()
    # Not found yet proves nothing: the list may lag and the request may be in flight.
    row = rig.row(message_id)
    assert (row["state"], row["send_at"]) == ("unknown", recovered_at + 10.0)
    assert rig.fake.requests == 0
    rig.clock.advance(10.0)
    await dispatcher.drain()
    await dispatcher.drain()
    assert rig.row(message_id)["state"] == "sent"
    assert rig.fake.requests == 1
    assert [m.body for m in rig.fake.accepted] == [BODY]
    assert await rig.outcomes(message_id) == [
        "interrupted", "lookup_too_early", "lookup_not_found", "accepted"]


async def test_recovered_message_is_checked_before_new_messages_are_sent(rig: Rig) -> None:
    interrupted = await _post_then_crash(rig, reach_twilio=True)
    fresh = await rig.add_message(to=OTHER)
    await rig.store.recover_interrupted(rig.clock())
    progress = asyncio.Event()
    dispatcher = rig.dispatcher(on_progress=progress.set)
    stop = asyncio.Event()
    sender = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.wait_for(rig.fake.wait_for(2), 10)
        while rig.row(fresh)["state"] != "sent":
            progress.clear()
            await asyncio.wait_for(progress.wait(), 10)
    finally:
        stop.set()
        await sender
    assert rig.fake.log == [("create", TO), ("list", TO), ("list", TO), ("create", OTHER)]
    assert rig.row(interrupted)["state"] == "sent"
    assert dispatcher.sent == 2


async def test_list_lag_is_never_taken_for_absence(tmp_path: Path) -> None:
    async with open_rig(tmp_path, list_lag=5.0) as rig:
        message_id = await _post_then_crash(rig, reach_twilio=True)
        await rig.store.recover_interrupted(rig.clock())
        dispatcher = rig.dispatcher(lookup_settle=10.0)
        await dispatcher.drain()
        assert rig.row(message_id)["state"] == "unknown"
        assert await rig.outcomes(message_id) == ["interrupted", "lookup_too_early"]
        rig.clock.advance(10.0)
        await dispatcher.drain()
        assert rig.row(message_id)["state"] == "sent"
        assert rig.fake.requests == 1


async def test_same_text_sent_earlier_to_the_number_is_not_taken_for_the_lost_one(
    rig: Rig,
) -> None:
    first = await rig.add_message()
    dispatcher = rig.dispatcher(lookup_settle=10.0)
    await dispatcher.drain()
    rig.clock.advance(5.0)
    rig.fake.script.append(Scripted(status=500))
    second = await rig.add_message()  # another call, the same rule and text
    await dispatcher.drain()
    rig.clock.advance(10.0)
    await dispatcher.drain()
    first_row, second_row = rig.row(first), rig.row(second)
    assert (first_row["state"], second_row["state"]) == ("sent", "sent")
    assert second_row["provider_id"] != first_row["provider_id"]
    assert [m.body for m in rig.fake.accepted] == [BODY, BODY]
    assert rig.fake.requests == 3
    assert await rig.outcomes(second) == ["ambiguous", "lookup_not_found", "accepted"]


async def test_unexplained_message_blocks_resend_until_left_for_a_human(rig: Rig) -> None:
    rig.fake.inject(TO, "Your engineer arrives at 10:00.", from_=FROM)
    rig.fake.script.append(Scripted(status=500))
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher(lookup_settle=10.0, lookup_delay=30.0, max_lookups=3)
    with capture_logs() as logs:
        await dispatcher.drain()
        rig.clock.advance(10.0)
        await dispatcher.drain()
        row = rig.row(message_id)
        assert (row["state"], row["lookups"]) == ("unknown", 1)
        assert rig.clock() + 15.0 <= row["send_at"] <= rig.clock() + 30.0
        for _ in range(4):
            rig.clock.advance(600.0)
            await dispatcher.drain()
    row = rig.row(message_id)
    assert row["state"] == "unknown"
    assert row["settle_from"] is None  # no further lookup scheduled
    assert row["reason"].startswith("3 provider lookups inconclusive")
    assert row["reason"].endswith("not resent: check the provider's records")
    assert [e["event"] for e in logs if e["event"] == "sms.lookup_abandoned"] == [
        "sms.lookup_abandoned"]
    assert (dispatcher.abandoned, rig.fake.requests, rig.fake.lists) == (1, 1, 6)
    assert await rig.store.lookups_scheduled() == 0


async def test_failed_lookup_is_retried_later_then_finds_the_message(rig: Rig) -> None:
    rig.fake.script.append(Scripted(status=500, accept=True))
    rig.fake.list_script.append(Scripted(status=503))
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher(lookup_settle=10.0, lookup_delay=30.0)
    await dispatcher.drain()
    rig.clock.advance(10.0)
    with capture_logs() as logs:
        await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["lookups"]) == ("unknown", 1)
    assert row["reason"] == "lookup failed: HTTP 503: Unable to fetch page"
    assert "sms.lookup_error" not in [e["event"] for e in logs]  # classified, not a crash
    rig.clock.advance(30.0)
    await dispatcher.drain()
    assert rig.row(message_id)["state"] == "sent"
    assert rig.fake.requests == 1
    assert await rig.outcomes(message_id) == ["ambiguous", "lookup_unavailable", "lookup_found"]


async def test_interrupted_lookup_is_redone_after_a_restart(rig: Rig) -> None:
    rig.fake.script.append(Scripted(status=500, accept=True))
    message_id = await rig.add_message()
    await rig.dispatcher(lookup_settle=10.0).drain()
    rig.clock.advance(10.0)
    [claim] = await rig.store.claim_unknown_due(rig.clock())
    assert (claim.message.id, rig.row(message_id)["state"]) == (message_id, "checking")
    assert await rig.store.claim_unknown_due(rig.clock()) == []  # never checked twice at once
    await rig.crash()
    assert await rig.store.recover_interrupted(rig.clock()) == 1
    await rig.dispatcher(lookup_settle=10.0).drain()
    assert rig.row(message_id)["state"] == "sent"
    assert rig.fake.requests == 1


async def test_row_left_sending_by_schema_1_is_searched_from_its_claim(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        await rig.store.close()
        rig.path.unlink()
        claimed_at = rig.clock() - 1_000.0
        _schema_1_row_left_sending(rig.path, created_at=claimed_at - 500, claimed_at=claimed_at)
        # The same text to the same number before the claim is not this attempt's copy.
        rig.fake.inject(TO, BODY, from_=FROM, created=claimed_at - 400)
        rig.store = await Store.open(rig.path)
        assert rig.row(1)["attempt_started_at"] == claimed_at
        assert await rig.store.recover_interrupted(rig.clock()) == 1
        dispatcher = rig.dispatcher(lookup_settle=10.0, max_age=86_400.0)
        await dispatcher.drain()
        rig.clock.advance(10.0)
        await dispatcher.drain()
        row = rig.row(1)
        assert row["state"] == "sent"
        assert row["provider_id"] == rig.fake.accepted[1].sid
        assert rig.fake.requests == 1


def _schema_1_row_left_sending(path: Path, *, created_at: float, claimed_at: float) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO calls VALUES (1, 'lab', '1.0', 'inbound', ?, ?, '', NULL, NULL, 1,"
            " 'answered', NULL, NULL, 20, 3, '{}', '{}', ?, ?, 'linkedid_end', ?)",
            (TO, TO, created_at - 60, created_at, created_at),
        )
        db.execute(
            "INSERT INTO messages (id, call_id, rule, recipient, to_number, provider, template,"
            " body, state, attempts, send_at, created_at, updated_at)"
            " VALUES (1, 1, 'thanks', 'customer', ?, 'twilio', 'thanks', ?, 'sending', 1,"
            " ?, ?, ?)",
            (TO, BODY, created_at, created_at, claimed_at),
        )


async def test_stop_during_lookups_leaves_the_rest_unknown_for_the_next_start(rig: Rig) -> None:
    rig.fake.script.extend([Scripted(status=500, accept=True)] * 2)
    first = await rig.add_message()
    second = await rig.add_message(to=OTHER)
    await rig.dispatcher(lookup_settle=10.0).drain()
    rig.clock.advance(10.0)
    stop = asyncio.Event()
    await rig.dispatcher(lookup_settle=10.0, on_progress=stop.set).run(stop)
    assert (rig.row(first)["state"], rig.row(second)["state"]) == ("sent", "unknown")
    assert rig.row(second)["send_at"] <= rig.clock()  # still due: checked first next time
    assert await rig.store.counts_by_state() == {"sent": 1, "unknown": 1}
    assert rig.fake.requests == 2


@pytest.mark.parametrize("reach_twilio", [True, False])
async def test_a_busy_number_does_not_block_the_lookup(rig: Rig, reach_twilio: bool) -> None:
    """150 earlier texts to the number today (a manager's alerts): more than one list page.

    Twilio lists newest first, so the cut list still covers everything since the attempt:
    ours is found, or proved absent and sent once.
    """
    for index in range(150):
        rig.fake.inject(TO, f"alert {index}", from_=FROM, created=rig.clock() - 600 + index)
    message_id = await _post_then_crash(rig, reach_twilio=reach_twilio)
    await rig.store.recover_interrupted(rig.clock())
    dispatcher = rig.dispatcher(lookup_settle=10.0)
    rig.clock.advance(10.0)
    await dispatcher.drain()
    assert rig.row(message_id)["state"] == "sent"
    assert [m.body for m in rig.fake.accepted].count(BODY) == 1
    assert (await rig.outcomes(message_id))[-1] == (
        "lookup_found" if reach_twilio else "accepted")
