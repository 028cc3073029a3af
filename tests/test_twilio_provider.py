"""The real Twilio SDK against a fake Twilio on loopback: each answer maps to one error class."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hangupsms.config import ProviderConfig
from hangupsms.models import OutboundMessage, SendStatus
from hangupsms.providers.twilio import TwilioProvider
from tests.faketwilio import FakeTwilio, Scripted

SID = "AC" + "1" * 32
TOKEN = "secret-token"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    server = await FakeTwilio(SID, TOKEN).start()
    yield server
    await server.stop()


def _provider(fake: FakeTwilio, *, timeout: float = 5.0, service: str = "") -> TwilioProvider:
    cfg = ProviderConfig(
        name="twilio", kind="twilio", account_sid=SID, auth_token=TOKEN,
        from_="" if service else "+447700900000", messaging_service_sid=service,
        api_url=fake.url, timeout=timeout,
    )
    return TwilioProvider(cfg)


def _message(to: str = "+447700900123") -> OutboundMessage:
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
    provider = _provider(fake, service="MG" + "2" * 32)
    try:
        result = await provider.send(_message())
    finally:
        await provider.close()
    assert result.status is SendStatus.ACCEPTED
    assert fake.accepted[0].from_ == ""
    assert fake.accepted[0].messaging_service_sid == "MG" + "2" * 32


@pytest.mark.parametrize(
    ("scripted", "status", "code"),
    [
        (Scripted(status=400, code=21610), SendStatus.REJECTED, "21610"),
        (Scripted(status=400, code=21211), SendStatus.REJECTED, "21211"),
        (Scripted(status=400, code=21408), SendStatus.REJECTED, "21408"),
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


async def test_wrong_credentials_are_rejected_not_retried(fake: FakeTwilio) -> None:
    fake.auth_token = "other"
    provider = _provider(fake)
    try:
        result = await provider.send(_message())
    finally:
        await provider.close()
    assert result.status is SendStatus.REJECTED
    assert result.error_code == "20003"
