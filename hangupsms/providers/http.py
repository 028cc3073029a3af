"""A generic HTTP SMS gateway (`kind: http`): the request is a template, success a rule.

Most national gateways take one form, JSON or query request per message and answer with a
status code, sometimes a JSON status field. The configuration (see `ProviderConfig`) says
which; `classify` turns every outcome into one `SendStatus`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from jinja2 import Template, TemplateError
from multidict import CIMultiDict

from hangupsms.config import JsonTemplate, ProviderConfig
from hangupsms.models import (
    LookupResult,
    LookupStatus,
    OutboundMessage,
    SendResult,
    SendStatus,
)
from hangupsms.render import sandbox

MAX_ANSWER = 65536  # bytes of an answer read: a status and an id are near the start
DETAIL_CHARS = 200  # of the gateway's answer kept in a result's detail
HIDDEN = "[redacted]"
MIN_HIDDEN = 4  # shorter configured values would hide ordinary words of a detail
_MISSING = object()
# Answers about us, not the message: credentials refused (401, 403, 407), the URL or method
# wrong (404, 405), or a redirect we never follow. REFUSED, so the rule's next provider may
# send it; any other 4xx (or a success_json_path that says no) is about the message: REJECTED.
REFUSING_STATUS = frozenset({401, 403, 404, 405, 407})
# A URL's scheme, user info, host and path, query and fragment. aiohttp quotes the request
# URL in some errors (`400, message='Bad status line…', url='http://…?api_key=…'`), and a
# detail is stored and shown by `hangupsms history`: only scheme, host and path are kept.
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^\s/?#@'\"<>]*@)?(?P<place>[^\s?#'\"<>]*)"
    r"(?P<rest>[?#][^\s'\"<>]*)?"
)


@dataclass(frozen=True, slots=True)
class GatewayAnswer:
    """An HTTP answer, reduced to what judging it needs (`headers` names in lower case)."""

    status: int
    headers: Mapping[str, str]
    text: str


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """One message as the gateway will receive it (every template rendered)."""

    query: dict[str, str]
    form: dict[str, str] | None
    json_body: bytes | None


class HttpGatewayProvider:
    """Sends one request per message; one `aiohttp.ClientSession`, opened on first use.

    A generic gateway offers no way to ask whether it took a message, so `lookup` always
    answers UNAVAILABLE: a send that ended AMBIGUOUS (timeout, 5xx, cut connection) is
    never resent, and after the provider's `max_lookups` it is left `unknown` for a human.
    """

    def __init__(self, cfg: ProviderConfig) -> None:
        self.name = cfg.name
        self._cfg = cfg
        environment = sandbox()
        sources = [*(cfg.form or {}).values(), *cfg.query.values(), *_json_strings(cfg.json_)]
        self._templates = {text: environment.from_string(text) for text in sources}
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: OutboundMessage) -> SendResult:
        try:
            request = self.render(message)
        except TemplateError as exc:
            # Our configuration of this gateway is at fault, not the message.
            return SendResult(SendStatus.REFUSED,
                              detail=safe_detail(f"template failed: {exc}", self._cfg))
        outcome: GatewayAnswer | Exception
        try:
            async with asyncio.timeout(self._cfg.timeout):
                outcome = await self._exchange(request)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            outcome = exc
        return classify(outcome, self._cfg)

    def render(self, message: OutboundMessage) -> GatewayRequest:
        """The request for `message`; a value inserted into a template is never evaluated."""
        variables = {
            "to": message.to, "body": message.body, "message_id": message.id,
            "rule": message.rule,
        }

        def fill(fields: Mapping[str, str]) -> dict[str, str]:
            return {name: self._templates[text].render(variables) for name, text in fields.items()}

        json_body = None
        if self._cfg.json_ is not None:
            document = _render_json(self._cfg.json_, self._templates, variables)
            json_body = json.dumps(document, ensure_ascii=False).encode("utf-8")
        form = None if self._cfg.form is None else fill(self._cfg.form)
        return GatewayRequest(query=fill(self._cfg.query), form=form, json_body=json_body)

    async def lookup(
        self, message: OutboundMessage, since: float, *, exclude: Collection[str] = ()
    ) -> LookupResult:
        return LookupResult(
            LookupStatus.UNAVAILABLE,
            detail="a generic HTTP gateway cannot be asked whether it took a message",
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _exchange(self, request: GatewayRequest) -> GatewayAnswer:
        if self._session is None:
            # The deadline is our asyncio.timeout; aiohttp's own defaults (5 min) stay out.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        headers: CIMultiDict[str] = CIMultiDict(self._cfg.headers)
        if request.json_body is not None:
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        # A redirect is not followed: a POST replayed elsewhere could send the SMS twice.
        async with self._session.request(
            self._cfg.method, self._cfg.url, headers=headers, params=request.query or None,
            data=request.form if request.json_body is None else request.json_body,
            allow_redirects=False,
        ) as response:
            raw = b""
            while len(raw) < MAX_ANSWER:
                chunk = await response.content.read(MAX_ANSWER - len(raw))
                if not chunk:
                    break
                raw += chunk
            return GatewayAnswer(
                status=response.status,
                headers={name.lower(): value for name, value in response.headers.items()},
                text=raw.decode(response.charset or "utf-8", errors="replace"),
            )


def classify(outcome: GatewayAnswer | Exception, cfg: ProviderConfig) -> SendResult:
    """Decide, in one place, what one exchange with the gateway means for retrying.

    The detail never holds a URL's query or user info, nor a configured header, query or
    form value: an error or an answer quoting them would carry a credential into the
    database and `hangupsms history`.
    """
    result = _classify(outcome, cfg)
    return dataclasses.replace(result, detail=safe_detail(result.detail, cfg))


def safe_detail(text: str, cfg: ProviderConfig) -> str:
    """`text` with URLs cut to scheme, host and path and the configured values hidden."""
    text = _URL.sub(_bare_url, text)
    for value in sorted(_configured_values(cfg), key=len, reverse=True):
        text = text.replace(value, HIDDEN)
    return text


def _bare_url(match: re.Match[str]) -> str:
    cut = "?…" if match.group("rest") else ""
    return f"{match.group('scheme')}{match.group('place')}{cut}"


def _configured_values(cfg: ProviderConfig) -> set[str]:
    """Header values and the fixed (untemplated) query and form values: where keys live."""
    found = set(cfg.headers.values())
    found.update(value for value in (*cfg.query.values(), *(cfg.form or {}).values())
                 if "{{" not in value and "{%" not in value)
    found.update(_url_secrets(cfg.url))
    # "Bearer abc…": the token alone can be quoted too.
    found |= {value.split()[-1] for value in found if value.strip()}
    return {value for value in found if len(value) >= MIN_HIDDEN}


def _url_secrets(url: str) -> Iterator[str]:
    parts = urlsplit(url)
    if parts.password:
        yield parts.password
    yield from (value for _, value in parse_qsl(parts.query))


def _classify(outcome: GatewayAnswer | Exception, cfg: ProviderConfig) -> SendResult:
    if isinstance(outcome, aiohttp.ClientConnectorError):
        # Refused, unreachable, DNS or TLS failure: the request never reached the gateway.
        shown = _shown(str(outcome), cfg)
        return SendResult(SendStatus.TRANSIENT, detail=f"connect failed: {shown}")
    if isinstance(outcome, TimeoutError):
        return SendResult(SendStatus.AMBIGUOUS, detail=f"no answer within {cfg.timeout}s")
    if isinstance(outcome, Exception):
        shown = _shown(str(outcome), cfg)
        return SendResult(SendStatus.AMBIGUOUS, detail=f"{type(outcome).__name__}: {shown}")
    status = outcome.status
    code = str(status)
    detail = f"HTTP {status}: {_shown(outcome.text, cfg)}"
    if status in cfg.success_status if cfg.success_status else 200 <= status < 300:
        return _judge_success(outcome, cfg)
    if status == 429:
        return SendResult(SendStatus.THROTTLED, error_code=code, detail=detail,
                          retry_after=_retry_after(outcome.headers))
    if status >= 500:
        # The request reached the gateway; whether it sent the message is unknown.
        return SendResult(SendStatus.AMBIGUOUS, error_code=code, detail=detail)
    if status in REFUSING_STATUS or 300 <= status < 400:
        return SendResult(SendStatus.REFUSED, error_code=code, detail=detail)
    return SendResult(SendStatus.REJECTED, error_code=code, detail=detail)


def _judge_success(answer: GatewayAnswer, cfg: ProviderConfig) -> SendResult:
    document: Any = _MISSING
    if cfg.success_json_path or cfg.id_json_path:
        try:
            document = json.loads(answer.text)
        except (ValueError, RecursionError):
            document = _MISSING
    if cfg.success_json_path:
        found = _at_path(document, cfg.success_json_path)
        if found is _MISSING or _as_text(found) != cfg.success_value:
            shown = "absent" if found is _MISSING else repr(_as_text(found))
            return SendResult(
                SendStatus.REJECTED, error_code=str(answer.status),
                detail=f"HTTP {answer.status} but {cfg.success_json_path} is {shown}, not "
                       f"{cfg.success_value!r}: {_shown(answer.text, cfg)}",
            )
    if not cfg.id_json_path:
        return SendResult(SendStatus.ACCEPTED)
    found = _at_path(document, cfg.id_json_path)
    if found is _MISSING or found is None or isinstance(found, dict | list):
        return SendResult(SendStatus.ACCEPTED, detail=f"no message id at {cfg.id_json_path}")
    return SendResult(SendStatus.ACCEPTED, provider_id=_as_text(found))


def _at_path(document: Any, path: str) -> Any:
    """The value at a dotted path (`data.messages.0.id`), or `_MISSING`."""
    value = document
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def _as_text(value: Any) -> str:
    # JSON's own spelling, so `success_value: true` matches `true` and `0` matches `0`.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _shown(text: str, cfg: ProviderConfig) -> str:
    # Hidden before the cut, so no cut can leave a credential's first characters.
    text = " ".join(safe_detail(text, cfg).split())
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        value = float(headers.get("retry-after", ""))
    except ValueError:
        return None  # absent, or an HTTP date
    return max(0.0, value) if math.isfinite(value) else None


def _json_strings(template: JsonTemplate) -> list[str]:
    if isinstance(template, str):
        return [template]
    if isinstance(template, Mapping):
        return [text for item in template.values() for text in _json_strings(item)]
    if isinstance(template, tuple):
        return [text for item in template for text in _json_strings(item)]
    return []


def _render_json(
    template: JsonTemplate, compiled: Mapping[str, Template], variables: Mapping[str, Any]
) -> Any:
    if isinstance(template, str):
        return compiled[template].render(variables)
    if isinstance(template, Mapping):
        return {key: _render_json(item, compiled, variables) for key, item in template.items()}
    if isinstance(template, tuple):
        return [_render_json(item, compiled, variables) for item in template]
    return template
