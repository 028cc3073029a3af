"""A daemon with its web server on, fed two recorded calls: the scenery of the web tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from twilio.request_validator import RequestValidator

from hangupsms.config import load_config
from hangupsms.daemon import Daemon
from hangupsms.replay import AmiReplayServer
from tests.faketwilio import FakeTwilio
from tests.lab import FIXTURES, SECRET, SID, TOKEN, USER, fake_twilio

PUBLIC_URL = "https://pbx.example.com/sms"
CUSTOMER = "+447700900123"  # Alice: call a, answered by agent1 in queue support
FRENCH = "+33612345678"  # call c: missed
LANDING = "https://shop.example.com/offer?x=1"
HELP_TEXT = "Acme: call 0800 000 000. Reply STOP to opt out."


@dataclass
class WebRig:
    daemon: Daemon
    twilio: FakeTwilio
    http: aiohttp.ClientSession
    base: str  # http://127.0.0.1:<port>
    db: Path

    async def post(self, path: str, form: Mapping[str, str], *, sign: bool = True,
                   token: str = TOKEN) -> aiohttp.ClientResponse:
        """POST `form` as Twilio would: form-encoded, signed over the public URL."""
        headers = {}
        if sign:
            validator = RequestValidator(token)
            headers["X-Twilio-Signature"] = validator.compute_signature(PUBLIC_URL + path,
                                                                        dict(form))
        async with self.http.post(self.base + path, data=dict(form), headers=headers) as resp:
            await resp.read()
            return resp


def web_config(tmp_path: Path, *, ami_port: int, twilio_url: str, web_port: int = 0) -> Path:
    raw: dict[str, Any] = yaml.safe_load((FIXTURES / "reference.yaml").read_text("utf-8"))
    raw["pbx"][0]["port"] = ami_port
    raw["providers"]["twilio"]["api_url"] = twilio_url
    raw["database"] = str(tmp_path / "h.db")
    raw["templates"]["thanks"] = (
        "Thanks for calling, {{ customer_name }}. Rate {{ agent_name }} 1-5: "
        f"{{{{ link('{LANDING}', tag='offer') }}}}")
    raw["web"] = {"host": "127.0.0.1", "port": web_port, "public_url": PUBLIC_URL + "/",
                  "help_text": HELP_TEXT, "survey_rules": ["thanks"], "survey_window": 3600}
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), "utf-8")
    return path


@contextlib.asynccontextmanager
async def web_rig(tmp_path: Path) -> AsyncIterator[WebRig]:
    """Calls a (thanks, with a link) and c (missed + alert) sent; the daemon still running."""
    transcripts = [FIXTURES / "a.ami", FIXTURES / "c.ami"]
    async with (fake_twilio() as twilio,
                AmiReplayServer(transcripts, username=USER, secret=SECRET) as ami):
        config = web_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url)
        daemon = Daemon(load_config(config))
        runner = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(30):
                await daemon.ready.wait()
                await twilio.wait_for(3)
                await daemon.wait_drained()
            assert daemon.web is not None and daemon.web.port is not None
            async with aiohttp.ClientSession() as http:
                yield WebRig(daemon, twilio, http, f"http://127.0.0.1:{daemon.web.port}",
                             tmp_path / "h.db")
        finally:
            daemon.stop.set()
            await runner


def status_form(sid: str, status: str, *, to: str = CUSTOMER,
                error_code: str | None = None) -> dict[str, str]:
    """A status callback body exactly as Twilio posts it (field set of a real callback)."""
    form = {
        "SmsSid": sid, "SmsStatus": status, "MessageStatus": status, "To": to,
        "MessagingServiceSid": "", "MessageSid": sid, "AccountSid": SID,
        "From": "+447700900000", "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        form["ErrorCode"] = error_code
    return form


def inbound_form(sid: str, body: str, *, sender: str = CUSTOMER) -> dict[str, str]:
    """An inbound SMS webhook body exactly as Twilio posts it."""
    return {
        "ToCountry": "GB", "ToState": "", "SmsMessageSid": sid, "NumMedia": "0",
        "ToCity": "", "FromZip": "", "SmsSid": sid, "FromState": "", "SmsStatus": "received",
        "FromCity": "", "Body": body, "FromCountry": "GB", "To": "+447700900000",
        "MessagingServiceSid": "", "ToZip": "", "NumSegments": "1", "ReferralNumMedia": "0",
        "MessageSid": sid, "AccountSid": SID, "From": sender, "ApiVersion": "2010-04-01",
    }
