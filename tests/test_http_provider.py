"""The http gateway provider against a loopback aiohttp server playing the gateway."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yaml
from aiohttp import web
from multidict import CIMultiDict

from hangupsms.cli import EXIT_OK, main
from hangupsms.config import ConfigError, ProviderConfig, parse_config
from hangupsms.models import LookupStatus, OutboundMessage, SendResult, SendStatus
from hangupsms.providers import build_provider
from hangupsms.providers.http import HttpGatewayProvider, safe_detail

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
TO = "+447700900123"
HOSTILE = "Hi {{ 7*7 }} \"quoted\" 'single'\nline two & a=b+c%20 ✓ 😀 {% if x %}"


@dataclass(frozen=True, slots=True)
class Answer:
    """One scripted answer: status, body (JSON when not a string), headers, or a hang."""

    status: int = 200
    body: Any = "OK"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # stall until the server stops


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes


class FakeGateway:
    """Records every request; answers from `script`, then 200 "OK"."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: deque[Answer] = deque()
        self.url = ""
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeGateway:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, dict(request.query),
                              CIMultiDict(request.headers), await request.read()))
        answer = self.script.popleft() if self.script else Answer()
        if answer.hang:
            await self._released.wait()
        if isinstance(answer.body, str):
            return web.Response(status=answer.status, text=answer.body, headers=answer.headers)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    server = await FakeGateway().start()
    yield server
    await server.stop()


def _config_text(gateway: dict[str, Any], database: Path | None = None) -> str:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["providers"] = {"gateway": gateway}
    for rule in raw["rules"]:
        rule["send"]["via"] = "gateway"
    if database is not None:
        raw["database"] = str(database)
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


def _cfg(gateway: dict[str, Any], environ: dict[str, str] | None = None) -> ProviderConfig:
    return parse_config(_config_text(gateway), environ=environ or {}).providers["gateway"]


def _form_gateway(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "http", "url": f"{url}/api/send",
            "form": {"to": "{{ to }}", "text": "{{ body }}", "sender": "Acme"}, **extra}


def _message(body: str = "Thanks for calling, Zoë") -> OutboundMessage:
    return OutboundMessage(id=42, to=TO, body=body, provider="gateway", call_pbx="lab",
                           call_linkedid="1.0", rule="thanks")


async def _send(cfg: ProviderConfig, message: OutboundMessage | None = None) -> SendResult:
    provider = build_provider(cfg)
    try:
        return await provider.send(message or _message())
    finally:
        await provider.close()


def _form(seen: Seen) -> dict[str, str]:
    pairs = parse_qsl(seen.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    return dict(pairs)


async def test_post_form_sends_rendered_fields_and_the_header_from_the_environment(
    gateway: FakeGateway,
) -> None:
    cfg = _cfg(_form_gateway(gateway.url, headers={"Authorization": "Bearer ${SMS_TOKEN}"}),
               environ={"SMS_TOKEN": "tok-123"})
    result = await _send(cfg)
    assert result.status is SendStatus.ACCEPTED
    [seen] = gateway.seen
    assert (seen.method, seen.path) == ("POST", "/api/send")
    assert seen.headers["Authorization"] == "Bearer tok-123"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert _form(seen) == {"to": TO, "text": "Thanks for calling, Zoë", "sender": "Acme"}


async def test_post_json_renders_a_nested_body_and_keeps_other_scalars(
    gateway: FakeGateway,
) -> None:
    cfg = _cfg({"kind": "http", "url": gateway.url + "/v2/sms", "json": {
        "recipient": "{{ to }}",
        "message": {"text": "{{ body }}", "ref": "{{ message_id }}-{{ rule }}", "flash": False},
        "parts": [1, "{{ to }}", None],
    }})
    assert (await _send(cfg)).status is SendStatus.ACCEPTED
    [seen] = gateway.seen
    assert seen.headers["Content-Type"].startswith("application/json")
    assert json.loads(seen.body) == {
        "recipient": TO,
        "message": {"text": "Thanks for calling, Zoë", "ref": "42-thanks", "flash": False},
        "parts": [1, TO, None],
    }


async def test_get_puts_the_message_in_the_query_and_sends_no_body(gateway: FakeGateway) -> None:
    cfg = _cfg({"kind": "http", "method": "get", "url": gateway.url + "/send?user=acme",
                "query": {"key": "${SMS_KEY}", "to": "{{ to }}", "msg": "{{ body }}"}},
               environ={"SMS_KEY": "k&1"})
    assert cfg.method == "GET"
    assert (await _send(cfg)).status is SendStatus.ACCEPTED
    [seen] = gateway.seen
    assert seen.method == "GET" and seen.body == b""
    assert seen.query == {"user": "acme", "key": "k&1", "to": TO,
                          "msg": "Thanks for calling, Zoë"}


@pytest.mark.parametrize("where", ["form", "json", "query"])
async def test_a_hostile_body_arrives_byte_for_byte_as_data(
    gateway: FakeGateway, where: str
) -> None:
    fields = {"to": "{{ to }}", "text": "{{ body }}"}
    choices: dict[str, dict[str, Any]] = {
        "form": {"form": fields}, "json": {"json": fields},
        "query": {"method": "GET", "query": fields},
    }
    cfg = _cfg({"kind": "http", "url": gateway.url, **choices[where]})
    assert (await _send(cfg, _message(HOSTILE))).status is SendStatus.ACCEPTED
    [seen] = gateway.seen
    received: object
    if where == "form":
        received = _form(seen)
    elif where == "json":
        received = json.loads(seen.body)
        assert "✓ 😀".encode() in seen.body  # UTF-8 as is, not \u escapes
    else:
        received = seen.query
    assert received == {"to": TO, "text": HOSTILE}


async def test_success_json_path_that_matches_is_accepted_with_the_gateway_id(
    gateway: FakeGateway,
) -> None:
    cfg = _cfg(_form_gateway(gateway.url, success_json_path="result.status",
                             success_value="OK", id_json_path="result.messages.0.id"))
    gateway.script.append(Answer(body={"result": {"status": "OK", "messages": [{"id": 981}]}}))
    result = await _send(cfg)
    assert (result.status, result.provider_id) == (SendStatus.ACCEPTED, "981")


@pytest.mark.parametrize("body", [
    {"result": {"status": "ERROR", "reason": "no credit"}}, {"other": 1}, "<html>busy</html>",
])
async def test_success_json_path_that_does_not_match_is_rejected_with_the_answer(
    gateway: FakeGateway, body: Any
) -> None:
    cfg = _cfg(_form_gateway(gateway.url, success_json_path="result.status",
                             success_value="OK"))
    gateway.script.append(Answer(body=body))
    result = await _send(cfg)
    assert result.status is SendStatus.REJECTED
    assert "result.status" in result.detail
    assert (json.dumps(body) if not isinstance(body, str) else body)[:8] in result.detail


async def test_an_answer_without_the_id_is_still_accepted_and_says_so(
    gateway: FakeGateway,
) -> None:
    cfg = _cfg(_form_gateway(gateway.url, id_json_path="id"))
    result = await _send(cfg)  # the default answer is the text "OK", not JSON
    assert (result.status, result.provider_id) == (SendStatus.ACCEPTED, None)
    assert "no message id at id" in result.detail


async def test_a_long_answer_is_cut_in_the_detail(gateway: FakeGateway) -> None:
    gateway.script.append(Answer(status=400, body="x" * 5000))
    result = await _send(_cfg(_form_gateway(gateway.url)))
    assert result.status is SendStatus.REJECTED
    assert len(result.detail) < 300 and result.detail.endswith("...")


@pytest.mark.parametrize(("status", "success", "expected"), [
    (201, None, SendStatus.ACCEPTED),
    (400, None, SendStatus.REJECTED),
    (422, None, SendStatus.REJECTED),
    (401, None, SendStatus.REFUSED),
    (404, None, SendStatus.REFUSED),
    (500, None, SendStatus.AMBIGUOUS),
    (503, None, SendStatus.AMBIGUOUS),
    (202, [200], SendStatus.REJECTED),
    (202, [200, 202], SendStatus.ACCEPTED),
    (302, None, SendStatus.REFUSED),
])
async def test_each_status_maps_to_one_error_class(
    gateway: FakeGateway, status: int, success: list[int] | None, expected: SendStatus
) -> None:
    extra = {} if success is None else {"success_status": success}
    headers = {"Location": gateway.url + "/elsewhere"} if status == 302 else {}
    gateway.script.append(Answer(status=status, body="answer", headers=headers))
    result = await _send(_cfg(_form_gateway(gateway.url, **extra)))
    assert result.status is expected
    assert [s.path for s in gateway.seen] == ["/api/send"]  # a redirect is not followed
    if expected is not SendStatus.ACCEPTED:
        assert result.error_code == str(status) and f"HTTP {status}: answer" in result.detail


@pytest.mark.parametrize(("value", "expected"), [
    ("7", 7.0), ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("inf", None),
])
async def test_429_is_throttled_and_honours_a_numeric_retry_after(
    gateway: FakeGateway, value: str, expected: float | None
) -> None:
    gateway.script.append(Answer(status=429, body="slow down", headers={"Retry-After": value}))
    result = await _send(_cfg(_form_gateway(gateway.url)))
    assert (result.status, result.retry_after) == (SendStatus.THROTTLED, expected)


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await _send(_cfg(_form_gateway(f"http://127.0.0.1:{port}")))
    assert result.status is SendStatus.TRANSIENT
    assert "connect failed" in result.detail


async def test_a_gateway_that_hangs_past_the_timeout_is_ambiguous(
    gateway: FakeGateway,
) -> None:
    gateway.script.append(Answer(hang=True))
    result = await _send(_cfg(_form_gateway(gateway.url, timeout=0.2)))
    assert result.status is SendStatus.AMBIGUOUS
    assert "no answer within 0.2s" in result.detail
    assert len(gateway.seen) == 1


async def test_lookup_is_unavailable_so_an_ambiguous_send_is_never_resent(
    gateway: FakeGateway,
) -> None:
    provider = HttpGatewayProvider(_cfg(_form_gateway(gateway.url)))
    try:
        result = await provider.lookup(_message(), 0.0)
    finally:
        await provider.close()
    assert result.status is LookupStatus.UNAVAILABLE
    assert "cannot be asked" in result.detail
    assert gateway.seen == []


async def test_one_session_serves_every_send_until_close(gateway: FakeGateway) -> None:
    provider = HttpGatewayProvider(_cfg(_form_gateway(gateway.url)))
    try:
        results = [await provider.send(_message(f"n{i}")) for i in range(3)]
    finally:
        await provider.close()
    assert [r.status for r in results] == [SendStatus.ACCEPTED] * 3
    assert [_form(s)["text"] for s in gateway.seen] == ["n0", "n1", "n2"]
    await provider.close()  # closing twice is harmless


@pytest.mark.parametrize(("gateway_cfg", "path", "words"), [
    ({"form": {"t": "{{ body }}"}, "json": {"t": "{{ body }}"}},
     "providers.gateway.json", "not both"),
    ({"json": {"message": "{{ body "}}, "providers.gateway.json.message", "syntax error"),
    ({"json": {"nested": {"message": "{% for %}{{ body }}"}}},
     "providers.gateway.json.nested.message", "syntax error"),
    ({"form": {"text": "{{ bdy }}"}}, "providers.gateway.form.text", "unknown variable 'bdy'"),
    ({"method": "DELETE", "form": {"t": "{{ body }}"}}, "providers.gateway.method", "GET or POST"),
    ({"method": "GET", "form": {"t": "{{ body }}"}}, "providers.gateway.form", "no body"),
    ({"url": "ftp://sms.example.com/", "form": {"t": "{{ body }}"}}, "providers.gateway.url",
     "http://"),
    ({"url": "https://x/{{ to }}", "form": {"t": "{{ body }}"}}, "providers.gateway.url",
     "not a template"),
    ({"form": {"t": "{{ to }}"}}, "providers.gateway", "{{ body }}"),
    ({"form": {"t": "{{ body }}"}, "success_json_path": "status"}, "providers.gateway",
     "go together"),
    ({"form": {"t": "{{ body }}"}, "success_status": [200, 99]},
     "providers.gateway.success_status[1]", "at least 100"),
    ({"form": {"t": "{{ body }}"}, "headers": {"X-A": "a\nb"}}, "providers.gateway.headers.X-A",
     "line breaks"),
    ({"form": {"t": "{{ body }}"}, "lookup_limit": 5}, "providers.gateway.lookup_limit",
     "unknown key"),
])
def test_a_bad_gateway_config_names_the_key_path_and_line(
    gateway_cfg: dict[str, Any], path: str, words: str
) -> None:
    text = _config_text({"kind": "http", "url": "https://sms.example.com/send", **gateway_cfg})
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert caught.value.path == path
    assert words in caught.value.message
    assert caught.value.line is not None
    line = text.splitlines()[caught.value.line - 1]
    if path.endswith("]"):
        assert line.lstrip().startswith("- ")  # a list item is blamed on its own line
    else:
        assert f"{path.rsplit('.', 1)[-1]}:" in line


def test_a_missing_url_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config_text({"kind": "http", "form": {"t": "{{ body }}"}}), environ={})
    assert caught.value.path == "providers.gateway.url"


def test_an_identical_gateway_config_compares_equal_for_reload() -> None:
    spec = {"kind": "http", "url": "https://sms.example.com/send",
            "json": {"a": ["{{ body }}", {"b": 1}]}, "headers": {"X-Key": "${SMS_TOKEN}"}}
    first, second = _cfg(spec, {"SMS_TOKEN": "tok-x"}), _cfg(spec, {"SMS_TOKEN": "tok-x"})
    assert first == second
    assert first != _cfg(spec, {"SMS_TOKEN": "tok-y"})
    assert "tok-x" not in repr(first)


async def test_replay_of_transcript_c_sends_both_messages_through_the_gateway(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    config = tmp_path / "hangupsms.yaml"
    spec = {"kind": "http", "url": gateway.url + "/send",
            "headers": {"Authorization": "Bearer ${SMS_TOKEN}"},
            "json": {"to": "{{ to }}", "text": "{{ body }}"},
            "success_json_path": "ok", "success_value": "true", "id_json_path": "id"}
    config.write_text(_config_text(spec, tmp_path / "h.db"), encoding="utf-8")
    for n in (1, 2):
        gateway.script.append(Answer(body={"ok": True, "id": f"gw-{n}"}))
    argv = ["replay", "-c", str(config), str(FIXTURES / "c.ami")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMS_TOKEN", "tok-c")
        code = await asyncio.to_thread(main, argv, out=io.StringIO())
    assert code == EXIT_OK
    expected = yaml.safe_load((FIXTURES / "expected-messages.yaml").read_text(encoding="utf-8"))
    wanted = sorted((m["to"], m["body"]) for m in expected["c"][0]["sent"])
    got = sorted((json.loads(s.body)["to"], json.loads(s.body)["text"]) for s in gateway.seen)
    assert got == wanted
    assert {s.headers["Authorization"] for s in gateway.seen} == {"Bearer tok-c"}


# --- credentials never reach a stored detail --------------------------------------------------

API_KEY = "key-5ecret-in-the-query"
HEADER_TOKEN = "hdr-5ecret-token"


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Not HTTP: aiohttp's error for it quotes the request URL, query and all."""
    await reader.read(65536)
    writer.write(b"HELLO WORLD\r\n\r\n")
    await writer.drain()
    writer.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("peer", ["invalid-answer", "refused"])
async def test_a_failed_send_stores_and_shows_no_credential(tmp_path: Path, peer: str) -> None:
    server = await asyncio.start_server(_garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1] if peer == "invalid-answer" else _free_port()
    database = tmp_path / "h.db"
    config = tmp_path / "hangupsms.yaml"
    spec = {"kind": "http", "method": "GET", "url": f"http://127.0.0.1:{port}/send",
            "headers": {"Authorization": "Bearer ${SMS_TOKEN}"},
            "query": {"api_key": "${SMS_KEY}", "to": "{{ to }}", "text": "{{ body }}"},
            # One attempt each: no pacing wait, and no retry due before the replay ends.
            "rate": 1000, "base_delay": 300}
    config.write_text(_config_text(spec, database), encoding="utf-8")
    history = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SMS_KEY", API_KEY)
            patch.setenv("SMS_TOKEN", HEADER_TOKEN)
            replayed = ["replay", "-c", str(config), str(FIXTURES / "c.ami")]
            assert await asyncio.to_thread(main, replayed, out=io.StringIO()) == EXIT_OK
            shown = ["history", "-c", str(config)]
            assert await asyncio.to_thread(main, shown, out=history) == EXIT_OK
    finally:
        server.close()
        await server.wait_closed()
    output = history.getvalue()
    # Both messages' attempts were stored with their detail: what failed, and where.
    expected = ("ClientResponseError: 400" if peer == "invalid-answer"
                else "connect failed: Cannot connect to host")
    attempts = [line for line in output.splitlines() if line.startswith("    ")]
    assert len(attempts) == 2 and all(expected in line for line in attempts), output
    if peer == "invalid-answer":
        assert f"http://127.0.0.1:{port}/send?…" in output
    files = await asyncio.to_thread(_contents, tmp_path, "h.db*")
    assert "h.db" in files
    for secret in (API_KEY, HEADER_TOKEN):
        assert secret not in output
        assert [name for name, data in files.items() if secret.encode() in data] == []


def _contents(folder: Path, pattern: str) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.glob(pattern)}


@pytest.mark.parametrize(("text", "shown"), [
    ("url='https://u:pw@sms.example.com/v1/send?api_key=abc&to=1#x' failed",
     "url='https://sms.example.com/v1/send?…' failed"),
    ("the gateway said: bad token hdr-5ecret-token", "the gateway said: bad token [redacted]"),
    ("echo Bearer hdr-5ecret-token and fixed-sender-id", "echo [redacted] and [redacted]"),
    ("http://sms.example.com/send has no query", "http://sms.example.com/send has no query"),
])
def test_a_detail_keeps_no_url_query_user_info_or_configured_value(text: str, shown: str) -> None:
    cfg = _cfg({"kind": "http", "url": "https://sms.example.com/send?account=acct-77",
                "headers": {"Authorization": "Bearer ${SMS_TOKEN}"},
                "form": {"to": "{{ to }}", "text": "{{ body }}", "from": "fixed-sender-id"}},
               environ={"SMS_TOKEN": HEADER_TOKEN})
    assert safe_detail(text, cfg) == shown
    assert safe_detail("account acct-77 unknown", cfg) == "account [redacted] unknown"
