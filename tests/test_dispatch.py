"""The sender against the real Twilio SDK and FakeTwilio: each answer gets its class's handling,
and the fake never holds a second copy of a message."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hangupsms.dispatch import Dispatcher, RetryPolicy
from tests.faketwilio import Scripted
from tests.outboxrig import BODY, FROM, TO, Rig, open_rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_rig(tmp_path) as rig:
        yield rig


async def test_accepted_message_is_sent_once_with_the_provider_sid(rig: Rig) -> None:
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher()
    await dispatcher.drain()
    row = rig.row(message_id)
    assert [(m.to, m.from_, m.body) for m in rig.fake.accepted] == [(TO, FROM, BODY)]
    assert (row["state"], row["provider_id"]) == ("sent", rig.fake.accepted[0].sid)
    assert dispatcher.sent == 1
    assert await rig.outcomes(message_id) == ["accepted"]


async def test_opted_out_recipient_fails_and_is_never_retried(rig: Rig) -> None:
    rig.fake.script.append(Scripted(status=400, code=21610))
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher()
    await dispatcher.drain()
    rig.clock.advance(86_000)
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["error_code"]) == ("failed", "21610")
    assert rig.fake.requests == 1
    assert rig.fake.accepted == []


async def test_throttled_message_waits_for_retry_after(rig: Rig) -> None:
    rig.fake.script.append(Scripted(status=429, code=20429, headers={"Retry-After": "7"}))
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher()
    throttled_at = rig.clock()
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["send_at"]) == ("pending", throttled_at + 7)
    rig.clock.advance(6.5)
    await dispatcher.drain()
    assert rig.fake.requests == 1
    rig.clock.advance(0.5)
    await dispatcher.drain()
    assert rig.row(message_id)["state"] == "sent"
    assert len(rig.fake.accepted) == 1
    assert await rig.outcomes(message_id) == ["throttled", "accepted"]


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_without_a_create_is_resent_only_after_the_lookup_proves_it_absent(
    rig: Rig, status: int
) -> None:
    rig.fake.script.append(Scripted(status=status))
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher(lookup_settle=10.0)
    failed_at = rig.clock()
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["send_at"], row["error_code"]) == (
        "unknown", failed_at + 10.0, str(status))
    rig.clock.advance(9.0)
    await dispatcher.drain()  # the lookup is not due yet: nothing asked, nothing resent
    assert (rig.fake.lists, rig.fake.requests) == (0, 1)
    rig.clock.advance(1.0)
    await dispatcher.drain()
    assert rig.row(message_id)["state"] == "sent"
    assert rig.fake.requests == 2
    assert [m.body for m in rig.fake.accepted] == [BODY]
    assert await rig.outcomes(message_id) == ["ambiguous", "lookup_not_found", "accepted"]
    assert rig.row(message_id)["attempts"] == 2


async def test_500_that_created_the_message_is_found_and_never_resent(rig: Rig) -> None:
    rig.fake.script.append(Scripted(status=500, accept=True))
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher(lookup_settle=10.0)
    await dispatcher.drain()
    rig.clock.advance(10.0)
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["provider_id"]) == ("sent", rig.fake.accepted[0].sid)
    assert rig.fake.requests == 1
    assert len(rig.fake.accepted) == 1
    assert dispatcher.sent == 1
    assert await rig.outcomes(message_id) == ["ambiguous", "lookup_found"]


async def test_accepted_then_timed_out_is_found_not_resent(tmp_path: Path) -> None:
    async with open_rig(tmp_path, provider_timeout=0.2) as rig:
        rig.fake.script.append(Scripted(accept=True, hang=30.0))
        message_id = await rig.add_message()
        dispatcher = rig.dispatcher(lookup_settle=10.0)
        await dispatcher.drain()
        row = rig.row(message_id)
        assert row["state"] == "unknown"
        assert "no answer within 0.2s" in row["reason"]
        rig.clock.advance(10.0)
        await dispatcher.drain()
        row = rig.row(message_id)
        assert (row["state"], row["provider_id"]) == ("sent", rig.fake.accepted[0].sid)
        assert rig.fake.requests == 1
        assert len(rig.fake.accepted) == 1


async def test_retry_budget_spent_makes_the_message_dead_logged_once(rig: Rig) -> None:
    rig.fake.script.extend([Scripted(status=429, code=20429)] * 2)
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher(max_attempts=2, throttle_delay=30.0)
    with capture_logs() as logs:
        await dispatcher.drain()
        rig.clock.advance(30.0)
        await dispatcher.drain()
        rig.clock.advance(3_600.0)
        await dispatcher.drain()
    row = rig.row(message_id)
    assert row["state"] == "dead"
    assert row["reason"].startswith("retry budget of 2 attempts spent")
    assert dispatcher.dead == 1
    assert [e["reason"] for e in logs if e["event"] == "sms.dead"] == [row["reason"]]
    assert rig.fake.requests == 2
    assert rig.fake.accepted == []


async def test_message_older_than_max_age_is_dead_without_a_send(rig: Rig) -> None:
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher(max_age=3_600.0)
    rig.clock.advance(3_600.0)
    await dispatcher.drain()
    row = rig.row(message_id)
    assert row["state"] == "dead"
    assert "older than max_age 3600s" in row["reason"]
    assert dispatcher.dead == 1
    assert rig.fake.requests == 0


async def test_retry_that_would_pass_max_age_is_dead_now(rig: Rig) -> None:
    rig.fake.script.append(Scripted(status=429, code=20429, headers={"Retry-After": "7200"}))
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher(max_age=3_600.0)
    await dispatcher.drain()
    row = rig.row(message_id)
    assert row["state"] == "dead"
    assert row["reason"].startswith("next try would pass max_age 3600s")
    assert (rig.fake.requests, dispatcher.dead) == (1, 1)


async def test_absent_after_ambiguity_with_budget_spent_is_dead_not_resent(rig: Rig) -> None:
    rig.fake.script.append(Scripted(status=500))
    message_id = await rig.add_message()
    dispatcher = rig.dispatcher(max_attempts=1, lookup_settle=10.0)
    with capture_logs() as logs:
        await dispatcher.drain()
        rig.clock.advance(10.0)
        await dispatcher.drain()
    row = rig.row(message_id)
    assert row["state"] == "dead"
    assert row["reason"] == "not accepted; retry budget of 1 attempts spent"
    assert [e["event"] for e in logs if e["event"] == "sms.dead"] == ["sms.dead"]
    assert (rig.fake.requests, len(rig.fake.accepted), dispatcher.dead) == (1, 0, 1)


async def test_refused_connection_is_retried_after_a_jittered_backoff(rig: Rig) -> None:
    message_id = await rig.add_message()
    await rig.fake.stop()  # nothing listens: a refused connection never reached Twilio
    dispatcher = rig.dispatcher(base_delay=2.0)
    started = rig.clock()
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert started + 1.0 <= row["send_at"] <= started + 2.0  # 2 s, jittered down to half
    assert await rig.outcomes(message_id) == ["transient"]


async def test_a_providers_own_policy_overrides_the_default(rig: Rig) -> None:
    message_id = await rig.add_message()
    dispatcher = Dispatcher(
        rig.store, {"twilio": rig.provider}, {}, policy=RetryPolicy(max_age=86_400.0),
        policies={"twilio": RetryPolicy(max_age=60.0)}, clock=rig.clock, rng=random.Random(1),
    )
    rig.clock.advance(60.0)
    await dispatcher.drain()
    assert "older than max_age 60s" in rig.row(message_id)["reason"]
    assert rig.fake.requests == 0


def test_retry_policy_refuses_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(lookup_settle=-1.0)
