"""A Twilio-compatible HTTP server on 127.0.0.1 for tests: records messages, scripts failures.

Message dates come from `clock` (the tests' fake clock), so a lookup's time window is judged
on the same time line as the sender's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
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
    queued: bool = False  # when recorded: still queued, so no date_sent yet


@dataclass(frozen=True, slots=True)
class Received:
    sid: str
    to: str
    from_: str
    body: str
    messaging_service_sid: str
    account_sid: str
    created: float = 0.0  # the fake's clock
    sent: float | None = None  # date_sent; None while queued
    status_callback: str = ""  # the StatusCallback URL the create asked for


class FakeClock:
    """Time that moves only when a test says so: `clock()` reads it, `advance()` moves it."""

    def __init__(self, now: float = 1_796_400_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTwilio:
    """`await FakeTwilio(account_sid, auth_token).start()`; `.url` is the base for `api_url`.

    `script` answers creates, `list_script` answers list reads (then: the real list).
    `list_lag`: a message is listed only this many seconds (of `clock`) after its creation,
    like Twilio's list that can trail a create.
    """

    def __init__(
        self, account_sid: str, auth_token: str, *, clock: Callable[[], float] = time.time,
        list_lag: float = 0.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.clock = clock
        self.list_lag = list_lag
        self.accepted: list[Received] = []
        self.requests = 0  # message creates (POSTs)
        self.lists = 0  # list reads (GETs)
        self.log: list[tuple[str, str]] = []  # ("create" | "list", To), ("account", sid) in order
        self.script: deque[Scripted] = deque()
        self.list_script: deque[Scripted] = deque()
        self.arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._released = asyncio.Event()
        self._open = asyncio.Event()  # cleared by stall(): creates wait until resume()
        self._open.set()
        self.stalled = 0  # creates waiting now because of stall()
        self.account_status = "active"  # what an account fetch says: active, suspended, closed

    async def start(self) -> FakeTwilio:
        app = web.Application()
        path = "/2010-04-01/Accounts/{sid}/Messages.json"
        app.router.add_post(path, self._create)
        app.router.add_get(path, self._list)
        app.router.add_get("/2010-04-01/Accounts/{sid}.json", self._account)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._released.set()
        self._open.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def stall(self) -> None:
        """From now on, hold every create unanswered (a provider outage) until resume()."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until at least `count` messages were accepted (callers bound it with a timeout)."""
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.accepted) >= count)
        return list(self.accepted)

    def _authorised(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def inject(
        self, to: str, body: str, *, from_: str = "", messaging_service_sid: str = "",
        created: float | None = None,
    ) -> Received:
        """A message created some other way (another system on the same account)."""
        now = self.clock() if created is None else created
        received = Received(
            sid="SM" + secrets.token_hex(16), to=to, from_=from_, body=body,
            messaging_service_sid=messaging_service_sid, account_sid=self.account_sid,
            created=now, sent=now,
        )
        self.accepted.append(received)
        return received

    async def _create(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorised(request) or request.match_info["sid"] != self.account_sid:
            return _error(401, 20003, "Authenticate")
        form = await request.post()
        if not self._open.is_set():
            async with self.arrived:
                self.stalled += 1
                self.arrived.notify_all()
            await self._open.wait()
            self.stalled -= 1
        self.log.append(("create", str(form.get("To", ""))))
        step = self.script.popleft() if self.script else Scripted()
        now = self.clock()
        received = Received(
            sid="SM" + secrets.token_hex(16), to=str(form.get("To", "")),
            from_=str(form.get("From", "")), body=str(form.get("Body", "")),
            messaging_service_sid=str(form.get("MessagingServiceSid", "")),
            account_sid=self.account_sid, created=now, sent=None if step.queued else now,
            status_callback=str(form.get("StatusCallback", "")),
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

    async def _account(self, request: web.Request) -> web.Response:
        self.log.append(("account", request.match_info["sid"]))
        if not self._authorised(request) or request.match_info["sid"] != self.account_sid:
            return _error(401, 20003, "Authenticate")
        return web.json_response({
            "sid": self.account_sid, "friendly_name": "Fake account",
            "status": self.account_status, "type": "Full",
        })

    async def _list(self, request: web.Request) -> web.Response:
        self.lists += 1
        if not self._authorised(request):
            return _error(401, 20003, "Authenticate")
        query = request.query
        self.log.append(("list", query.get("To", "")))
        if self.list_script:
            step = self.list_script.popleft()
            return _error(step.status, step.code, "scripted list failure", step.headers)
        found = [m for m in self.accepted if self._listed(m, query)]
        # Twilio lists newest first.
        found.sort(key=lambda m: m.created, reverse=True)
        size = int(query.get("PageSize", "50"))
        return web.json_response({
            "messages": [_payload(m) for m in found[:size]], "next_page_uri": None,
            "page": 0, "page_size": size,
        })

    def _listed(self, message: Received, query: Mapping[str, str]) -> bool:
        if message.created > self.clock() - self.list_lag:
            return False
        if "To" in query and message.to != query["To"]:
            return False
        if "From" in query and message.from_ != query["From"]:
            return False
        after = query.get("DateSent>")
        # Twilio documents a GMT day ("2026-12-04": on or after its midnight); a message
        # not sent yet has no date_sent and does not pass a DateSent filter.
        return after is None or (message.sent is not None and message.sent >= _day_start(after))


def _day_start(value: str) -> float:
    day = datetime.strptime(value[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    return day.timestamp()


def _rfc2822(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return format_datetime(datetime.fromtimestamp(int(epoch), tz=UTC))


def _payload(message: Received) -> dict[str, Any]:
    return {
        "sid": message.sid, "account_sid": message.account_sid, "to": message.to,
        "from": message.from_ or None, "body": message.body,
        "status": "queued" if message.sent is None else "sent",
        "messaging_service_sid": message.messaging_service_sid or None, "num_segments": "1",
        "direction": "outbound-api", "date_created": _rfc2822(message.created),
        "date_sent": _rfc2822(message.sent),
    }


def _error(
    status: int, code: int | None, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"status": status, "code": code, "message": message, "more_info": ""}
    return web.json_response(body, status=status, headers=headers or {})
