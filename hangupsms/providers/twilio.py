"""Twilio through its official SDK (async); the only module that imports twilio."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from hangupsms.config import ProviderConfig
from hangupsms.models import (
    LookupResult,
    LookupStatus,
    OutboundMessage,
    SendResult,
    SendStatus,
)

# Rejections for our account's sake, not the recipient's (https://www.twilio.com/docs/api/
# errors): 20003 authentication failed, 20005 account not active, 20404 no such account or
# resource, 21408 the account has no permission for the 'To' region, 21606 and 21659 our
# 'From' cannot send, 21608 a trial account's unverified 'To', 21611 our 'From' queue is
# full. They are REFUSED: the rule's next provider may send the message. Every other 4xx
# (21211 invalid 'To', 21610 the recipient replied STOP, 21614 not a mobile, 21612 not
# reachable, ...) is about the message or its recipient: REJECTED, never tried elsewhere.
ACCOUNT_CODES = frozenset({20003, 20005, 20404, 21408, 21606, 21608, 21611, 21659})
THROTTLE_CODES = frozenset({20429, 14107})
LOOKUP_LIMIT = 100  # messages to one number per listing; more and absence cannot be proved


class _BoundedHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's client with a real per-request deadline and a Twilio-compatible base URL.

    twilio 9.x ignores `AsyncTwilioHttpClient(timeout=…)` and create_async() takes none, so
    the deadline is enforced here. `max_retries` stays off: it would re-POST a message
    create on 5xx and send a duplicate SMS.
    """

    def __init__(self, timeout: float, api_url: str) -> None:
        super().__init__(pool_connections=True)
        self._deadline = timeout
        self._api_url = api_url.rstrip("/")
        self.last_headers: dict[str, str] = {}

    async def request(self, method: str, url: str, **kwargs: Any) -> Response:
        # aiohttp 3.14 deprecates `auth=BasicAuth(...)` and warns on every request: send
        # the same Authorization header ourselves.
        auth = kwargs.pop("auth", None)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"Basic {token}"}
        if self._api_url and url.startswith("https://api.twilio.com"):
            url = self._api_url + url[len("https://api.twilio.com"):]
        self.last_headers = {}
        async with asyncio.timeout(self._deadline):
            response: Response = await super().request(method, url, **kwargs)
        self.last_headers = {str(k).lower(): str(v) for k, v in (response.headers or {}).items()}
        return response


class TwilioProvider:
    """Sends with Messages.create; classifies every failure once (see `classify_rest_error`)."""

    def __init__(self, cfg: ProviderConfig, *, lookup_limit: int = LOOKUP_LIMIT) -> None:
        self.name = cfg.name
        self._cfg = cfg
        self._lookup_limit = lookup_limit
        self._http = _BoundedHttpClient(cfg.timeout, cfg.api_url)
        self._client = Client(cfg.account_sid, cfg.auth_token, http_client=self._http)

    async def send(self, message: OutboundMessage) -> SendResult:
        params: dict[str, Any] = {"to": message.to, "body": message.body}
        if self._cfg.messaging_service_sid:
            params["messaging_service_sid"] = self._cfg.messaging_service_sid
        else:
            params["from_"] = self._cfg.from_
        if self._cfg.status_callback:
            # Our id in the (signed) URL ties a receipt to its message even before the
            # create's answer, and its SID, are recorded.
            params["status_callback"] = f"{self._cfg.status_callback}?m={message.id}"
        try:
            created = await self._client.messages.create_async(**params)
        except TwilioRestException as exc:
            return classify_rest_error(exc.status, exc.code, exc.msg, self._http.last_headers)
        except aiohttp.ClientConnectorError as exc:
            # Refused, unreachable or DNS failure: the request never reached Twilio.
            return SendResult(SendStatus.TRANSIENT, detail=f"connect failed: {exc}")
        except TimeoutError:
            return SendResult(SendStatus.AMBIGUOUS, detail=f"no answer within {self._cfg.timeout}s")
        except (aiohttp.ClientError, OSError) as exc:
            return SendResult(SendStatus.AMBIGUOUS, detail=f"{type(exc).__name__}: {exc}")
        return SendResult(SendStatus.ACCEPTED, provider_id=str(created.sid))

    async def lookup(
        self, message: OutboundMessage, since: float, *, exclude: Collection[str] = ()
    ) -> LookupResult:
        """Search Twilio's records of messages to `message.to` for this one (see `match_listed`)."""
        day = datetime.fromtimestamp(since, tz=UTC).strftime("%Y-%m-%d")
        messages = self._client.messages
        try:
            # Twilio filters DateSent by GMT day (a superset, narrowed by date_created below).
            dated = await messages.list_async(
                to=message.to, date_sent_after=day, limit=self._lookup_limit + 1
            )
            # A message still queued has no date_sent yet, so a DateSent filter can leave it
            # out; the newest messages to the number (undated) cover it.
            recent = await messages.list_async(to=message.to, limit=self._lookup_limit)
        except TwilioRestException as exc:
            detail = f"lookup failed: HTTP {exc.status} code {exc.code}: {exc.msg}"
            return LookupResult(LookupStatus.UNAVAILABLE, detail=detail)
        except TwilioException as exc:
            # A list page that is not 200 raises the base class, the response attached.
            status = getattr(exc.args[-1] if exc.args else None, "status_code", "?")
            detail = f"lookup failed: HTTP {status}: {exc.args[0] if exc.args else exc}"
            return LookupResult(LookupStatus.UNAVAILABLE, detail=detail)
        except TimeoutError:
            detail = f"lookup got no answer within {self._cfg.timeout}s"
            return LookupResult(LookupStatus.UNAVAILABLE, detail=detail)
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"lookup failed: {type(exc).__name__}: {exc}"
            return LookupResult(LookupStatus.UNAVAILABLE, detail=detail)
        listed = {str(m.sid): _listed(m) for m in [*dated, *recent]}
        result = match_listed(
            message.body, since, listed.values(), exclude=exclude, from_=self._cfg.from_,
            messaging_service_sid=self._cfg.messaging_service_sid,
        )
        if len(dated) > self._lookup_limit and result.status is not LookupStatus.FOUND:
            # Twilio lists newest first: a cut list proves nothing about older messages,
            # unless it already reaches back before the attempt (a busy manager's number).
            created = [_listed(m).created for m in dated[:self._lookup_limit]]
            if all(c is None or c >= since for c in created):
                detail = f"more than {self._lookup_limit} messages to this number since {day}"
                return LookupResult(LookupStatus.UNAVAILABLE, detail=detail)
        return result

    async def check_account(self) -> tuple[bool, str]:
        """Fetch the account, which sends nothing: whether the credentials work, in words."""
        sid = self._cfg.account_sid
        try:
            account = await self._client.api.v2010.accounts(sid).fetch_async()
        except TwilioRestException as exc:
            return False, f"Twilio refused the account fetch: HTTP {exc.status} code {exc.code}"
        except TimeoutError:
            return False, f"no answer from Twilio within {self._cfg.timeout}s"
        except (aiohttp.ClientError, OSError) as exc:
            return False, f"cannot reach Twilio: {type(exc).__name__}: {exc}"
        status = str(account.status)
        return status == "active", f"account {account.friendly_name!r} is {status}"

    async def close(self) -> None:
        await self._http.close()


@dataclass(frozen=True, slots=True)
class ListedMessage:
    """One message of Twilio's list, reduced to what a lookup compares."""

    sid: str
    body: str
    from_: str
    messaging_service_sid: str
    created: float | None  # epoch seconds (Twilio's clock, whole seconds)
    status: str


def match_listed(
    body: str, since: float, listed: Iterable[ListedMessage], *, exclude: Collection[str],
    from_: str, messaging_service_sid: str,
) -> LookupResult:
    """Decide whether Twilio's list of messages to one number holds ours.

    Candidates are messages from our sender (the messaging service when one is configured,
    else our `from`) created at or after `since`, other than our other messages' ids. One
    with our exact body is ours: FOUND (the oldest, so repeated lookups agree). Candidates
    that differ (another system, or another of our messages still unresolved) leave the
    answer open: UNAVAILABLE, never NOT_FOUND, since a resend could be a duplicate.
    """
    candidates = [
        m for m in listed
        if m.sid not in exclude
        and (m.created is None or m.created >= since)
        and (m.messaging_service_sid == messaging_service_sid if messaging_service_sid
             else m.from_ == from_)
    ]
    same = sorted((m for m in candidates if m.body == body), key=lambda m: (m.created or 0, m.sid))
    if same:
        return LookupResult(
            LookupStatus.FOUND, provider_id=same[0].sid, detail=f"found, status {same[0].status}"
        )
    if candidates:
        detail = (f"{len(candidates)} other message(s) from our sender to this number since the"
                  " attempt; cannot prove ours absent")
        return LookupResult(LookupStatus.UNAVAILABLE, detail=detail)
    return LookupResult(LookupStatus.NOT_FOUND, detail="no such message since the attempt")


def _listed(instance: Any) -> ListedMessage:
    created: datetime | None = instance.date_created
    return ListedMessage(
        sid=str(instance.sid), body=str(instance.body or ""), from_=str(instance.from_ or ""),
        messaging_service_sid=str(instance.messaging_service_sid or ""),
        created=None if created is None else created.timestamp(), status=str(instance.status),
    )


def classify_rest_error(
    status: int, code: int | None, message: str, headers: dict[str, str]
) -> SendResult:
    """Decide, in one place, what a Twilio error answer means for retrying."""
    code_text = str(code) if code is not None else str(status)
    detail = f"HTTP {status} code {code_text}: {message}"
    if status == 429 or (code is not None and code in THROTTLE_CODES):
        return SendResult(
            SendStatus.THROTTLED, error_code=code_text, detail=detail,
            retry_after=_retry_after(headers),
        )
    if status >= 500:
        # The request reached Twilio; whether it created the message is unknown.
        return SendResult(SendStatus.AMBIGUOUS, error_code=code_text, detail=detail)
    if status in (401, 403) or (code is not None and code in ACCOUNT_CODES):
        return SendResult(SendStatus.REFUSED, error_code=code_text, detail=detail)
    return SendResult(SendStatus.REJECTED, error_code=code_text, detail=detail)


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
