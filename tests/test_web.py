"""The web side against a running daemon: Twilio callbacks, replies, links, health, metrics."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hangupsms.ami import ConnState
from hangupsms.config import load_config
from hangupsms.daemon import Daemon
from hangupsms.replay import AmiReplayServer
from tests.lab import SECRET, TOKEN, USER, fake_twilio
from tests.webrig import (
    CUSTOMER,
    FRENCH,
    HELP_TEXT,
    LANDING,
    PUBLIC_URL,
    WebRig,
    inbound_form,
    status_form,
    web_config,
    web_rig,
)


def _rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def _message(rig: WebRig, to: str, rule: str) -> tuple[int, str, int]:
    """(id, provider SID, call id) of the message `rule` sent to `to`."""
    [(message_id, sid, call_id)] = _rows(
        rig.db, "SELECT id, provider_id, call_id FROM messages WHERE to_number = ? AND rule = ?",
        (to, rule))
    return message_id, sid, call_id


async def test_status_callbacks_set_delivery_once_and_unsigned_ones_change_nothing(
    tmp_path: Path,
) -> None:
    async with web_rig(tmp_path) as rig:
        thanks_id, thanks_sid, _ = _message(rig, CUSTOMER, "thanks")
        missed_id, missed_sid, missed_call = _message(rig, FRENCH, "missed")
        # The create asked Twilio for receipts at the public URL, naming our message.
        callbacks = {m.to: m.status_callback for m in rig.twilio.accepted}
        assert callbacks[CUSTOMER] == f"{PUBLIC_URL}/twilio/status?m={thanks_id}"
        path = f"/twilio/status?m={thanks_id}"

        unsigned = await rig.post(path, status_form(thanks_sid, "delivered"), sign=False)
        forged = await rig.post(path, status_form(thanks_sid, "delivered"), token="not-ours")
        assert (unsigned.status, forged.status) == (403, 403)
        assert _rows(rig.db, "SELECT COUNT(*) FROM receipts") == [(0,)]
        assert _rows(rig.db, "SELECT delivery FROM messages WHERE id = ?", (thanks_id,)) == [
            (None,)]

        for status in ("queued", "sent", "delivered", "delivered"):  # the last is a replay
            answer = await rig.post(path, status_form(thanks_sid, status))
            assert answer.status == 204
        assert _rows(rig.db, "SELECT status FROM receipts WHERE message_id = ? ORDER BY id",
                     (thanks_id,)) == [("queued",), ("sent",), ("delivered",)]
        assert _rows(rig.db, "SELECT state, delivery, error_code FROM messages WHERE id = ?",
                     (thanks_id,)) == [("sent", "delivered", None)]

        # Matched by SID alone (no id in the URL); the error code lands on message and call.
        await rig.post("/twilio/status",
                       status_form(missed_sid, "undelivered", to=FRENCH, error_code="30003"))
        assert _rows(rig.db, "SELECT delivery, error_code FROM messages WHERE id = ?",
                     (missed_id,)) == [("undelivered", "30003")]
        assert _rows(rig.db, "SELECT call_id, error_code FROM receipts WHERE message_id = ?",
                     (missed_id,)) == [(missed_call, "30003")]
        # A SID that is not the one recorded for the message named in the URL: ignored.
        await rig.post(path, status_form("SM" + "0" * 32, "failed"))
        assert _rows(rig.db, "SELECT delivery FROM messages WHERE id = ?", (thanks_id,)) == [
            ("delivered",)]


async def test_inbound_keywords_ratings_and_replies(tmp_path: Path) -> None:
    async with web_rig(tmp_path) as rig:
        _, _, alice_call = _message(rig, CUSTOMER, "thanks")

        def suppressed() -> list[tuple[Any, ...]]:
            return _rows(rig.db, "SELECT number, source FROM suppressions")

        unsigned = await rig.post("/twilio/inbound", inbound_form("SM1", "STOP"), sign=False)
        assert unsigned.status == 403
        assert suppressed() == [] and _rows(rig.db, "SELECT COUNT(*) FROM inbound") == [(0,)]

        stop = await rig.post("/twilio/inbound", inbound_form("SM1", "  stop \n"))
        assert stop.status == 200
        assert suppressed() == [(CUSTOMER, "sms")]
        await rig.post("/twilio/inbound", inbound_form("SM2", "Unstop"))
        assert suppressed() == []
        # Twilio retrying the STOP after the START must not opt the customer out again.
        await rig.post("/twilio/inbound", inbound_form("SM1", "  stop \n"))
        assert suppressed() == []
        await rig.post("/twilio/inbound", inbound_form("SM3", "退订", sender=FRENCH))
        assert suppressed() == [(FRENCH, "sms")]
        # Not the whole message: a plain reply.
        await rig.post("/twilio/inbound", inbound_form("SM4", "please stop calling me"))

        async with rig.http.post(rig.base + "/twilio/inbound") as bare:
            assert bare.status == 403
        help_form = inbound_form("SM5", "help")
        help_answer = await _post_text(rig, help_form)
        assert f"<Message>{HELP_TEXT}</Message>" in help_answer

        await rig.post("/twilio/inbound", inbound_form("SM6", " 4 "))
        await rig.post("/twilio/inbound", inbound_form("SM7", "6"))
        # A digit from someone who got no survey message is only a reply.
        await rig.post("/twilio/inbound", inbound_form("SM8", "5", sender=FRENCH))
        assert _rows(rig.db, "SELECT call_id, agent_id, queue, score, customer FROM ratings") == [
            (alice_call, "agent1", "support", 4, CUSTOMER)]
        kinds = dict(_rows(rig.db, "SELECT sid, kind FROM inbound"))
        assert kinds == {"SM1": "opt_out", "SM2": "opt_in", "SM3": "opt_out", "SM4": "reply",
                         "SM5": "help", "SM6": "rating", "SM7": "reply", "SM8": "reply"}


async def _post_text(rig: WebRig, form: dict[str, str]) -> str:
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(TOKEN).compute_signature(PUBLIC_URL + "/twilio/inbound", form)
    async with rig.http.post(rig.base + "/twilio/inbound", data=form,
                             headers={"X-Twilio-Signature": signature}) as answer:
        assert answer.status == 200
        assert answer.content_type == "application/xml"
        return await answer.text()


async def test_tracked_link_redirects_to_its_url_and_counts_each_click(tmp_path: Path) -> None:
    async with web_rig(tmp_path) as rig:
        thanks_id, _, call_id = _message(rig, CUSTOMER, "thanks")
        [sms] = [m for m in rig.twilio.accepted if m.to == CUSTOMER]
        found = re.search(re.escape(PUBLIC_URL) + r"/r/([A-Za-z0-9_-]{22})$", sms.body)
        assert found is not None, sms.body
        token = found[1]
        assert _rows(rig.db, "SELECT message_id, url, tag FROM links WHERE token = ?",
                     (token,)) == [(thanks_id, LANDING, "offer")]

        async with rig.http.head(f"{rig.base}/r/{token}", allow_redirects=False) as answer:
            assert answer.status == 405
        for clicks in (1, 2):
            async with rig.http.get(f"{rig.base}/r/{token}", allow_redirects=False) as answer:
                assert answer.status == 302
                assert answer.headers["Location"] == LANDING
            assert _rows(rig.db, "SELECT COUNT(*) FROM clicks") == [(clicks,)]
        assert _rows(rig.db, "SELECT message_id, call_id, customer, tag FROM clicks LIMIT 1") == [
            (thanks_id, call_id, CUSTOMER, "offer")]

        for wrong in ("A" * 22, token[:-1], "..%2F..%2Fetc", f"{token}?url=https://evil.example"):
            async with rig.http.get(f"{rig.base}/r/{wrong}", allow_redirects=False) as answer:
                if "?" in wrong:  # the query is never read: the stored URL, one more click
                    assert answer.headers["Location"] == LANDING
                else:
                    assert answer.status == 404
        assert urlsplit(LANDING).netloc == "shop.example.com"


async def test_healthz_and_metrics_parse_with_prometheus_client(tmp_path: Path) -> None:
    async with web_rig(tmp_path) as rig:
        async with rig.http.get(rig.base + "/healthz") as answer:
            assert answer.status == 200
            assert await answer.json() == {"ok": True, "ami": {"lab": True}, "database": True,
                                           "sender": True}
        _, sid, _ = _message(rig, CUSTOMER, "thanks")
        await rig.post("/twilio/status", status_form(sid, "delivered"))
        async with rig.http.get(rig.base + "/metrics") as answer:
            assert answer.status == 200
            assert answer.content_type == "text/plain"
            text = await answer.text()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples[("hangupsms_ami_connected", (("pbx", "lab"),))] == 1
        assert samples[("hangupsms_messages", (("state", "sent"),))] == 3
        assert samples[("hangupsms_messages", (("state", "pending"),))] == 0
        assert samples[("hangupsms_messages_delivery", (("delivery", "delivered"),))] == 1
        assert samples[("hangupsms_calls_recorded_total", ())] == 2
        assert samples[("hangupsms_ami_events_total", ())] > 50
        assert samples[("hangupsms_provider_latency_seconds_count",
                        (("provider", "twilio"),))] == 3
        assert ("hangupsms_event_queue_depth", ()) in samples


async def test_healthz_is_503_naming_a_lost_ami_link(tmp_path: Path) -> None:
    async with fake_twilio() as twilio, AmiReplayServer([], username=USER, secret=SECRET) as ami:
        config = web_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url)
        daemon = Daemon(load_config(config))
        runner = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(30):
                await daemon.ready.wait()
                assert daemon.web is not None
                url = f"http://127.0.0.1:{daemon.web.port}/healthz"
                async with aiohttp.ClientSession() as http:
                    async with http.get(url) as answer:
                        assert answer.status == 200
                    await ami.close()  # and it does not come back
                    await daemon.connections[0].wait_state(
                        ConnState.DISCONNECTED, ConnState.CONNECTING)
                    async with http.get(url) as answer:
                        assert answer.status == 503
                        assert await answer.json() == {
                            "ok": False, "ami": {"lab": False}, "database": True,
                            "sender": True}
        finally:
            daemon.stop.set()
            await runner
