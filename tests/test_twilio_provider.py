"""The real Twilio SDK against a fake Twilio on loopback: each answer maps to one error class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from hangupsms.config import ProviderConfig
from hangupsms.models import LookupResult, LookupStatus, OutboundMessage, SendStatus
from hangupsms.providers.twilio import TwilioProvider
from tests.faketwilio import FakeClock, FakeTwilio, Scripted

SID = "AC" + "1" * 32
TOKEN = "secret-token"


FROM = "+447700900000"
SERVICE = "MG" + "2" * 32


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeTwilio]:
    server = await FakeTwilio(SID, TOKEN, clock=clock).start()
    yield server
    await server.stop()


def _provider(
    fake: FakeTwilio, *, timeout: float = 5.0, service: str = "", lookup_limit: int = 100
) -> TwilioProvider:
    cfg = ProviderConfig(
        name="twilio", kind="twilio", account_sid=SID, auth_token=TOKEN,
        from_="" if service else FROM, messaging_service_sid=service,
        api_url=fake.url, timeout=timeout,
    )
    return TwilioProvider(cfg, lookup_limit=lookup_limit)


TO = "+447700900123"


def _message(to: str = TO) -> OutboundMessage:
    return OutboundMessage(
        id=1, to=to, body="Thanks for calling, Zoë", provider="twilio",
        call_pbx="lab", call_linkedid="1.0", rule="thanks",
    )


async def test_accepted_message_reaches_the_fake_with_sid(fake: FakeTwilio) -> None:
    provider = _provider(fake)
    try:
        result = await provider.send(_message())
    finally:
        await provider.close()
    assert result.status is SendStatus.ACCEPTED
    assert [(m.to, m.from_, m.body) for m in fake.accepted] == [
        ("+447700900123", "+447700900000", "Thanks for calling, Zoë")
    ]
    assert result.provider_id == fake.accepted[0].sid


async def test_messaging_service_sid_replaces_from(fake: FakeTwilio) -> None:
    provider = _provider(fake, service=SERVICE)
    try:
        result = await provider.send(_message())
    finally:
        await provider.close()
    assert result.status is SendStatus.ACCEPTED
    assert fake.accepted[0].from_ == ""
    assert fake.accepted[0].messaging_service_sid == SERVICE


@pytest.mark.parametrize(
    ("scripted", "status", "code"),
    [
        (Scripted(status=400, code=21610), SendStatus.REJECTED, "21610"),
        (Scripted(status=400, code=21211), SendStatus.REJECTED, "21211"),
        (Scripted(status=400, code=21614), SendStatus.REJECTED, "21614"),
        (Scripted(status=400, code=21408), SendStatus.REFUSED, "21408"),
        (Scripted(status=400, code=21606), SendStatus.REFUSED, "21606"),
        (Scripted(status=500, code=None), SendStatus.AMBIGUOUS, "500"),
        (Scripted(status=503, code=None), SendStatus.AMBIGUOUS, "503"),
        (Scripted(status=429, code=20429, headers={"Retry-After": "7"}), SendStatus.THROTTLED,
         "20429"),
    ],
)
async def test_error_answers_are_classified_once(
    fake: FakeTwilio, scripted: Scripted, status: SendStatus, code: str
) -> None:
    fake.script.append(scripted)
    provider = _provider(fake)
    try:
        result = await provider.send(_message())
    finally:
        await provider.close()
    assert result.status is status
    assert result.error_code == code
    assert fake.requests == 1  # the SDK must not retry on its own (duplicate SMS)
    if status is SendStatus.THROTTLED:
        assert result.retry_after == 7.0


async def test_timeout_after_accepting_is_ambiguous(fake: FakeTwilio) -> None:
    fake.script.append(Scripted(accept=True, hang=30.0))
    provider = _provider(fake, timeout=0.2)
    try:
        result = await provider.send(_message())
    finally:
        await provider.close()
    assert result.status is SendStatus.AMBIGUOUS
    assert len(fake.accepted) == 1


async def test_connection_refused_is_transient(fake: FakeTwilio) -> None:
    url = fake.url
    await fake.stop()
    fake.url = url
    provider = _provider(fake)
    try:
        result = await provider.send(_message())
    finally:
        await provider.close()
    assert result.status is SendStatus.TRANSIENT


async def test_wrong_credentials_are_refused_for_the_next_provider(fake: FakeTwilio) -> None:
    fake.auth_token = "other"
    provider = _provider(fake)
    try:
        result = await provider.send(_message())
    finally:
        await provider.close()
    assert result.status is SendStatus.REFUSED
    assert result.error_code == "20003"


async def _lookup(
    fake: FakeTwilio, since: float, *, exclude: frozenset[str] = frozenset(), **kwargs: Any
) -> LookupResult:
    provider = _provider(fake, **kwargs)
    try:
        return await provider.lookup(_message(), since, exclude=exclude)
    finally:
        await provider.close()


async def test_lookup_finds_our_message_by_body_and_sender(
    fake: FakeTwilio, clock: FakeClock
) -> None:
    since = clock()
    fake.inject(TO, _message().body, from_="+447700900999")  # another sender of the account
    ours = fake.inject(TO, _message().body, from_=FROM)
    result = await _lookup(fake, since)
    assert (result.status, result.provider_id) == (LookupStatus.FOUND, ours.sid)
    assert fake.requests == 0  # a lookup never creates


async def test_lookup_matches_a_messaging_service_by_its_sid(
    fake: FakeTwilio, clock: FakeClock
) -> None:
    since = clock()
    ours = fake.inject(TO, _message().body, from_="+447700900555", messaging_service_sid=SERVICE)
    result = await _lookup(fake, since, service=SERVICE)
    assert (result.status, result.provider_id) == (LookupStatus.FOUND, ours.sid)


async def test_lookup_ignores_known_ids_older_messages_and_other_senders(
    fake: FakeTwilio, clock: FakeClock
) -> None:
    fake.inject(TO, _message().body, from_=FROM, created=clock() - 61)
    known = fake.inject(TO, _message().body, from_=FROM)
    fake.inject(TO, "Another company's reminder", from_="+447700900999")
    fake.inject("+447700900456", _message().body, from_=FROM)
    result = await _lookup(fake, clock() - 60, exclude=frozenset({known.sid}))
    assert result == LookupResult(
        LookupStatus.NOT_FOUND, detail="no such message since the attempt"
    )


async def test_lookup_cannot_prove_absence_past_another_text_from_our_sender(
    fake: FakeTwilio, clock: FakeClock
) -> None:
    since = clock()
    fake.inject(TO, "Your engineer arrives at 10:00.", from_=FROM)
    result = await _lookup(fake, since)
    assert result.status is LookupStatus.UNAVAILABLE
    assert "cannot prove ours absent" in result.detail


async def test_lookup_finds_a_message_still_queued_without_date_sent(
    fake: FakeTwilio, clock: FakeClock
) -> None:
    since = clock()
    fake.script.append(Scripted(status=500, accept=True, queued=True))
    provider = _provider(fake)
    try:
        assert (await provider.send(_message())).status is SendStatus.AMBIGUOUS
        result = await provider.lookup(_message(), since)
    finally:
        await provider.close()
    assert (result.status, result.provider_id) == (LookupStatus.FOUND, fake.accepted[0].sid)
    assert fake.lists == 2  # the DateSent-filtered list leaves it out; the newest list has it


async def test_lookup_past_its_limit_cannot_prove_absence(
    fake: FakeTwilio, clock: FakeClock
) -> None:
    """More messages since the attempt than one list holds: ours may be among the rest."""
    for second in range(3):
        fake.inject(TO, f"Reminder {second}", from_=FROM, created=clock() - 30 + second)
    result = await _lookup(fake, clock() - 60, lookup_limit=2)
    assert result.status is LookupStatus.UNAVAILABLE
    assert result.detail.startswith("more than 2 messages to this number since ")


async def test_a_cut_list_reaching_back_before_the_attempt_proves_absence(
    fake: FakeTwilio, clock: FakeClock
) -> None:
    """Twilio lists newest first: when even the cut list reaches back before the attempt,
    everything since the attempt is in it."""
    for hour in range(3):
        fake.inject(TO, f"Reminder {hour}", from_=FROM, created=clock() - 3_600 * (hour + 1))
    result = await _lookup(fake, clock(), lookup_limit=2)
    assert result.status is LookupStatus.NOT_FOUND


async def test_lookup_errors_are_unavailable_not_absence(
    fake: FakeTwilio, clock: FakeClock
) -> None:
    fake.list_script.append(Scripted(status=503))
    result = await _lookup(fake, clock())
    assert result.status is LookupStatus.UNAVAILABLE
    assert "HTTP 503" in result.detail
    url = fake.url
    await fake.stop()
    fake.url = url
    result = await _lookup(fake, clock())
    assert result.status is LookupStatus.UNAVAILABLE
    assert result.detail.startswith("lookup failed: ClientConnectorError")
