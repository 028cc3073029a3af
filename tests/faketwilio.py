"""A Twilio-compatible HTTP server on 127.0.0.1 for tests: records messages, scripts failures."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Scripted:
    """One scripted answer for the next create: HTTP status, Twilio code, headers, or a hang."""

    status: int = 201
    code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    accept: bool | None = None  # record the message as created; default: when status < 300
    hang: float = 0.0  # seconds to stall before answering (after recording when accept)


@dataclass(frozen=True, slots=True)
class Received:
    sid: str
    to: str
    from_: str
    body: str
    messaging_service_sid: str
    account_sid: str


class FakeTwilio:
    """`await FakeTwilio.start(account_sid, auth_token)`; `.url` is the base for `api_url`."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.accepted: list[Received] = []
        self.requests = 0
        self.script: deque[Scripted] = deque()
        self.arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._released = asyncio.Event()

    async def start(self) -> FakeTwilio:
        app = web.Application()
        path = "/2010-04-01/Accounts/{sid}/Messages.json"
        app.router.add_post(path, self._create)
        app.router.add_get(path, self._list)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until at least `count` messages were accepted (callers bound it with a timeout)."""
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.accepted) >= count)
        return list(self.accepted)

    def _authorised(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _create(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorised(request) or request.match_info["sid"] != self.account_sid:
            return _error(401, 20003, "Authenticate")
        form = await request.post()
        step = self.script.popleft() if self.script else Scripted()
        received = Received(
            sid="SM" + secrets.token_hex(16), to=str(form.get("To", "")),
            from_=str(form.get("From", "")), body=str(form.get("Body", "")),
            messaging_service_sid=str(form.get("MessagingServiceSid", "")),
            account_sid=self.account_sid,
        )
        if step.status < 300 if step.accept is None else step.accept:
            async with self.arrived:
                self.accepted.append(received)
                self.arrived.notify_all()
        if step.hang:
            # Stall like a provider that accepted but never answered; stop() releases it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), step.hang)
        if step.status >= 300:
            return _error(step.status, step.code, "scripted failure", step.headers)
        return web.json_response(_payload(received), status=201, headers=step.headers)

    async def _list(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, 20003, "Authenticate")
        to = request.query.get("To")
        found = [_payload(m) for m in self.accepted if to is None or m.to == to]
        return web.json_response(
            {"messages": found, "next_page_uri": None, "page": 0, "page_size": 50}
        )


def _payload(message: Received) -> dict[str, Any]:
    return {
        "sid": message.sid, "account_sid": message.account_sid, "to": message.to,
        "from": message.from_ or None, "body": message.body, "status": "queued",
        "messaging_service_sid": message.messaging_service_sid or None, "num_segments": "1",
        "direction": "outbound-api", "date_created": "Fri, 04 Dec 2026 19:37:48 +0000",
    }


def _error(
    status: int, code: int | None, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"status": status, "code": code, "message": message, "more_info": ""}
    return web.json_response(body, status=status, headers=headers or {})
