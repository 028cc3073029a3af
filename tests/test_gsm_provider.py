"""The ami-gsm provider: the real AMI client against the fake modem of the fake AMI server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hangupsms.ami import AmiConnection, ConnState
from hangupsms.config import PbxConfig, ProviderConfig
from hangupsms.dispatch import Dispatcher, RetryPolicy
from hangupsms.models import (
    Encoding,
    MessageState,
    OutboundMessage,
    PlannedMessage,
    RenderedText,
    SendStatus,
)
from hangupsms.providers import build_provider
from hangupsms.providers.amigsm import AmiGsmProvider, classify
from hangupsms.replay import AmiReplayServer, ModemAnswer
from hangupsms.store import Store
from tests.faketwilio import FakeClock
from tests.outboxrig import _call

USER, SECRET = "hangupsms", "s3cret"
TO = "+447700900123"
GUARD = 5.0  # seconds; only ever reached when something is broken
NOT_REGISTERED = "Device not connected / initialized / registered"


def gsm(**changes: Any) -> ProviderConfig:
    base = ProviderConfig(name="gsm", kind="ami-gsm", pbx="pbx1", device="dongle0", timeout=2.0)
    return dataclasses.replace(base, **changes)


def message(body: str = "Thanks for calling, Zoë.", id_: int = 1) -> OutboundMessage:
    return OutboundMessage(id=id_, to=TO, body=body, provider="gsm", call_pbx="pbx1",
                           call_linkedid="1796400000.1", rule="thanks")


@contextlib.asynccontextmanager
async def modem(*answers: ModemAnswer) -> AsyncIterator[tuple[AmiReplayServer, AmiConnection]]:
    """A fake PBX with a modem answering `answers` (then success), and a logged-in client."""
    async with AmiReplayServer(username=USER, secret=SECRET, modem=list(answers)) as server:
        pbx = PbxConfig(name="pbx1", port=server.port, username=USER, secret=SECRET,
                        reconnect_min=0.01, reconnect_max=0.05, ping_interval=60.0)
        connection = AmiConnection(pbx, lambda event: None)
        runner = asyncio.create_task(connection.run())
        try:
            async with asyncio.timeout(GUARD):
                await connection.wait_ready()
            yield server, connection
        finally:
            await asyncio.wait_for(connection.close(), GUARD)
            await asyncio.wait_for(runner, GUARD)


async def test_a_queued_sms_is_sent_with_the_modem_task_id() -> None:
    async with modem() as (server, connection):
        result = await AmiGsmProvider(gsm(), connection).send(message())
    assert result.status is SendStatus.ACCEPTED
    assert result.provider_id is not None and result.provider_id.startswith("0x")
    assert server.sms == [{"Action": "DongleSendSMS", "Device": "dongle0", "Number": TO,
                           "Message": "Thanks for calling, Zoë."}]


async def test_quectel_validity_and_report_become_their_headers() -> None:
    async with modem() as (server, connection):
        await AmiGsmProvider(gsm(validity=1440, report=True), connection).send(message())
        await AmiGsmProvider(gsm(module="quectel", device="quectel0"), connection).send(
            message())
    assert server.sms[0]["Validity"] == "1440" and server.sms[0]["Report"] == "yes"
    assert server.sms[1] == {"Action": "QuectelSendSMS", "Device": "quectel0", "Number": TO,
                             "Message": "Thanks for calling, Zoë."}


async def test_a_line_break_cannot_smuggle_headers_or_a_second_action() -> None:
    body = "Hi\r\n\r\nAction: Originate\nChannel: PJSIP/evil"
    async with modem() as (server, connection):
        result = await AmiGsmProvider(gsm(), connection).send(message(body))
    assert result.status is SendStatus.ACCEPTED
    assert server.sms == [{"Action": "DongleSendSMS", "Device": "dongle0", "Number": TO,
                           "Message": "Hi  Action: Originate Channel: PJSIP/evil"}]
    assert server.actions["originate"] == 0


async def test_a_body_with_a_control_character_is_rejected_unsent() -> None:
    async with modem() as (server, connection):
        result = await AmiGsmProvider(gsm(), connection).send(message("bell\x07"))
    assert result.status is SendStatus.REJECTED
    assert server.sms == []


@pytest.mark.parametrize(("answer", "status"), [
    (ModemAnswer("Error", "Invalid destination number"), SendStatus.REJECTED),
    (ModemAnswer("Error", NOT_REGISTERED), SendStatus.TRANSIENT),
    (ModemAnswer("Error", "Error adding SMS commands to queue"), SendStatus.TRANSIENT),
    (ModemAnswer("Error", "No such device"), SendStatus.TRANSIENT),
])
async def test_an_error_answer_is_rejected_only_when_no_retry_can_help(
    answer: ModemAnswer, status: SendStatus
) -> None:
    async with modem(answer) as (server, connection):
        result = await AmiGsmProvider(gsm(), connection).send(message())
    assert result.status is status
    assert result.error_code == answer.message
    assert len(server.sms) == 1


async def test_a_modem_that_never_answers_leaves_the_send_ambiguous() -> None:
    async with modem(ModemAnswer(response=None)) as (server, connection):
        result = await AmiGsmProvider(gsm(timeout=0.2), connection).send(message())
    assert result.status is SendStatus.AMBIGUOUS
    assert "0.2s" in result.detail
    assert len(server.sms) == 1


async def test_a_connection_lost_after_the_action_left_is_ambiguous() -> None:
    async with modem(ModemAnswer(drop=True)) as (server, connection):
        result = await AmiGsmProvider(gsm(), connection).send(message())
        assert len(server.sms) == 1
    assert result.status is SendStatus.AMBIGUOUS
    assert "lost" in result.detail


async def test_without_a_login_nothing_is_written_and_the_send_is_transient() -> None:
    async with modem() as (server, connection):
        await server.drop_connections()
        await connection.wait_state(ConnState.DISCONNECTED, ConnState.CONNECTING)
        result = await AmiGsmProvider(gsm(), connection).send(message())
    assert result.status is SendStatus.TRANSIENT
    assert server.sms == []


async def test_a_pbx_without_the_module_answers_unknown_command_which_is_retried() -> None:
    async with AmiReplayServer(username=USER, secret=SECRET) as server:
        pbx = PbxConfig(name="pbx1", port=server.port, username=USER, secret=SECRET)
        connection = AmiConnection(pbx, lambda event: None)
        runner = asyncio.create_task(connection.run())
        async with asyncio.timeout(GUARD):
            await connection.wait_ready()
            result = await AmiGsmProvider(gsm(), connection).send(message())
            await connection.close()
            await runner
    assert result.status is SendStatus.TRANSIENT
    assert result.error_code == "Invalid/unknown command"


async def test_outside_the_daemon_there_is_no_connection_and_the_message_waits() -> None:
    provider = build_provider(gsm(), ami={})
    result = await provider.send(message())
    assert result.status is SendStatus.TRANSIENT
    assert "pbx1" in result.detail


def test_classify_reads_chan_dongle_answers() -> None:
    ok = classify({"Response": "Success", "Message": "[dongle0] SMS queued for send",
                   "ID": "0x7f3a2c001e40"})
    assert (ok.status, ok.provider_id, ok.detail) == (
        SendStatus.ACCEPTED, "0x7f3a2c001e40", "SMS queued for send")
    assert classify({"Response": "Success"}).provider_id is None
    odd = classify({"Response": "Follows", "Message": "?"})
    assert odd.status is SendStatus.AMBIGUOUS
    denied = classify({"Response": "Error", "Message": "Permission denied"})
    assert denied.status is SendStatus.TRANSIENT
    assert "write = call" in denied.detail


async def test_an_ambiguous_send_is_never_resent_and_is_left_unknown_for_a_human(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = await Store.open(tmp_path / "outbox.db")
    try:
        text = RenderedText("Thanks for calling.", Encoding.GSM7, 1)
        planned = [PlannedMessage("thanks", "customer", TO, "gsm", "thanks", text)]
        assert await store.record_call(_call("1796400000.1", TO), TO, planned, clock())
        async with modem(ModemAnswer(response=None)) as (server, connection):
            provider = AmiGsmProvider(gsm(timeout=0.2), connection)
            policy = RetryPolicy(max_lookups=2, lookup_settle=10.0, lookup_delay=30.0)
            dispatcher = Dispatcher(store, {"gsm": provider}, {}, policy=policy, clock=clock,
                                    rng=random.Random(7))
            await dispatcher.drain()
            for _ in range(3):
                clock.advance(policy.max_delay)
                await dispatcher.drain()
            assert len(server.sms) == 1
        row = (await store.history(linkedid="1796400000.1"))[0]
    finally:
        await store.close()
    assert row.state == MessageState.UNKNOWN
    assert dispatcher.abandoned == 1 and dispatcher.sent == 0
    assert "not resent" in (row.reason or "")
