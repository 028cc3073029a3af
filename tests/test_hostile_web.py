"""Hostile HTTP requests: whatever reaches the web server, it refuses cleanly and stays up.

hypothesis builds Twilio webhook bodies from the pieces a scanner or a forger might send
(random bytes, invalid UTF-8, wrong content types, missing and extra fields, CR/LF, control
and bidi characters, 10 KB values, forged or malformed `X-Twilio-Signature`) and tracked
link paths (traversal, open-redirect attempts, query floods). They go over raw sockets to
one running daemon (`tests.webrig`, served from a thread so that hypothesis' examples can
call it). An unsigned or wrongly signed request leaves the database as it was and is counted
in `hangupsms_web_refused_total`; no request gets a 5xx; a signed request is served after.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from tests.lab import TOKEN
from tests.webrig import CUSTOMER, LANDING, PUBLIC_URL, inbound_form, status_form, web_rig

# Deterministic in CI: the same examples on every run, no example database.
BASE = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GUARD = 10.0  # seconds for one exchange; only ever reached when something is broken
TABLES = ("receipts", "inbound", "clicks", "suppressions", "ratings")
LIMIT = 64 * 1024  # the app's client_max_size
FORM = "application/x-www-form-urlencoded"
PARSER_LINE = 8190  # aiohttp's limit on the request line and on each header line


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: the server reset the connection before answering
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Served:
    port: int
    db: Path
    thanks_id: int
    thanks_sid: str
    token: str  # the tracked link of the thanks message

    def exchange(self, raw: bytes) -> Answer:
        """Send one raw HTTP request, read the answer until the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=GUARD) as sock:
            try:
                sock.sendall(raw)
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
            except (ConnectionResetError, BrokenPipeError):
                return Answer(None, {}, b"")
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        return Answer(int(lines[0].split()[1]), headers, body)

    def request(self, method: str, target: str, body: bytes = b"",
                headers: Mapping[str, str] | None = None) -> Answer:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        return self.exchange(head.encode("latin-1", "replace") + b"\r\n" + body)

    def post_signed(self, path: str, form: Mapping[str, str]) -> Answer:
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC_URL + path, dict(form))
        return self.request("POST", path, urlencode(form).encode(),
                            {"Content-Type": FORM, "X-Twilio-Signature": signature})

    def counts(self) -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            return {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # noqa: S608
                    for t in TABLES}

    def refused(self) -> dict[str, float]:
        answer = self.request("GET", "/metrics")
        assert answer.status == 200
        return {s.labels["reason"]: s.value
                for family in text_string_to_metric_families(answer.body.decode())
                for s in family.samples if s.name == "hangupsms_web_refused_total"}

    def still_serves(self) -> None:
        """A well-formed signed request is answered (a replayed receipt: no new row)."""
        replay = self.post_signed(f"/twilio/status?m={self.thanks_id}",
                                  status_form(self.thanks_sid, "sent"))
        assert replay.status == 204


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The web rig's daemon, its loop in a thread; one for the whole module."""
    tmp = tmp_path_factory.mktemp("hostile_web")
    ready = threading.Event()
    held: dict[str, object] = {}

    async def hold() -> None:
        try:
            async with web_rig(tmp) as rig:
                stop = asyncio.Event()
                assert rig.daemon.web is not None
                held.update(loop=asyncio.get_running_loop(), stop=stop, port=rig.daemon.web.port)
                ready.set()
                await stop.wait()
        finally:
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(hold(),), name="hostile-web")
    thread.start()
    try:
        assert ready.wait(60) and "port" in held, "the web rig did not start"
        db = tmp / "h.db"
        with contextlib.closing(sqlite3.connect(db)) as conn:
            thanks_id, sid = conn.execute("SELECT id, provider_id FROM messages WHERE rule ="
                                          " 'thanks'").fetchone()
            [token] = conn.execute("SELECT token FROM links").fetchone()
        port = held["port"]
        assert isinstance(port, int)
        rig = Served(port, db, int(thanks_id), str(sid), str(token))
        rig.still_serves()
        yield rig
    finally:
        loop, stop = held.get("loop"), held.get("stop")
        if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event):
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)


# --- pieces ----------------------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["\r\n", "\n", "\r", "\x00", "\x1b[31m", "\u202egpj.exe", "\u2028", "\x85",
                     "+447700900123", "STOP", "", " ", "%", "%zz", "&", "=", "a=b&c=d",
                     "../../etc/passwd", "SM" + "0" * 32, "²", "٣"]),
    st.integers(10_200, 10_300).map(lambda n: "9" * n),  # 10 KB values
)
TWILIO_KEYS = ["MessageSid", "SmsSid", "MessageStatus", "SmsStatus", "From", "To", "Body",
               "ErrorCode", "AccountSid"]
FIELDS = st.dictionaries(st.one_of(st.sampled_from(TWILIO_KEYS), st.text(max_size=12)),
                         HOSTILE_TEXT, max_size=8)
RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"\xff\xfe=\xc3", b"Body=%FF%FE", b"From=%C3", b"=&=&&", b"a" * 70_000,
                     b'{"MessageSid": "SM1"}', b"--x\r\nContent-Disposition: form-data\r\n",
                     b"MessageSid=SM1&MessageSid=SM2"]),
)
CONTENT_TYPES = st.sampled_from([
    FORM, f"{FORM}; charset=latin-1", f"{FORM}; charset=no-such-charset", "application/json",
    "multipart/form-data; boundary=x", "multipart/form-data", "text/plain", "", None])
SIGNATURES = st.one_of(
    st.none(), st.just(""), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255),
                                    max_size=40),
    st.sampled_from(["=" * 28, "AAAA", "\u00e9" * 10, "x" * 4_000]),
)
PATHS = st.sampled_from(["/twilio/status", "/twilio/inbound"])
QUERIES = st.one_of(st.just(""), st.builds(lambda v: "?m=" + quote(v, safe=""), HOSTILE_TEXT))


def refusals(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    return sum(after.values()) - sum(before.values())


# --- unsigned and forged: refused, counted, nothing stored ------------------------------------

@st.composite
def forged_posts(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A POST to a webhook that Twilio did not sign: a random form or random bytes."""
    path = draw(PATHS) + draw(QUERIES)
    if draw(st.booleans()):
        base = status_form("SM" + "1" * 32, "delivered") if "status" in path else \
            inbound_form("SM" + "2" * 32, "STOP")
        form = {**base, **draw(FIELDS)}
        body = urlencode(form).encode()
        signer = draw(st.sampled_from(["other-token", "other-url", "none"]))
        if signer == "other-token":
            signature: str | None = RequestValidator("not-ours").compute_signature(
                PUBLIC_URL + path, form)
        elif signer == "other-url":
            signature = RequestValidator(TOKEN).compute_signature(
                "https://evil.example/sms" + path, form)
        else:
            signature = draw(SIGNATURES)
    else:
        body, signature = draw(RAW_BODIES), draw(SIGNATURES)
    headers = {}
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return path, body, headers


@given(post=forged_posts())
@settings(BASE, max_examples=120)
def test_unsigned_or_forged_webhooks_are_refused_counted_and_change_nothing(
    served: Served, post: tuple[str, bytes, dict[str, str]]
) -> None:
    path, body, headers = post
    counts, before = served.counts(), served.refused()
    answer = served.request("POST", path, body, headers)
    allowed = (None, 403, 413, 415) if len(body) > LIMIT else (400, 403, 415)
    assert answer.status in allowed, (answer.status, answer.body[:200])
    assert served.counts() == counts
    # A request line over aiohttp's 8190 bytes is refused by its parser (400), before us.
    assert refusals(before, served.refused()) == (0 if len(path) > PARSER_LINE else 1)


# --- signed by Twilio but hostile: never a 5xx ------------------------------------------------

@st.composite
def signed_posts(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A signed webhook with fields removed, replaced by hostile values, or added."""
    path = draw(PATHS)
    sid = draw(st.sampled_from(["SM" + "3" * 32, "SM" + "4" * 32]))
    form = status_form(sid, "delivered") if "status" in path else inbound_form(sid, "4")
    for key in draw(st.lists(st.sampled_from(sorted(form)), max_size=3)):
        form.pop(key, None)
    form.update(draw(FIELDS))
    return path + draw(QUERIES), form


@given(post=signed_posts())
@example(post=("/twilio/status?m=%C2%B2", status_form("SM" + "3" * 32, "sent")))  # "²"
@example(post=("/twilio/status?m=" + "9" * 30, status_form("SM" + "3" * 32, "sent")))
@settings(BASE, max_examples=120)
def test_signed_hostile_fields_never_get_a_server_error(
    served: Served, post: tuple[str, dict[str, str]]
) -> None:
    path, form = post
    answer = served.post_signed(path, form)
    assert answer.status in (200, 204, 400), (answer.status, answer.body[:200])


# --- tracked links: only the stored URL, never one from the request ---------------------------

LINK_TARGETS = st.one_of(
    st.sampled_from([
        "/r/..%2F..%2Fetc%2Fpasswd", "/r/%2e%2e/%2e%2e/etc/passwd", "/r/../../etc/passwd",
        "/r/%2F%2Fevil.example", "/r//evil.example", "/r/https:%2F%2Fevil.example",
        "/r/%5C%5Cevil.example", "/r/%0D%0ALocation:%20https://evil.example", "/r/%00",
        "/r/%E2%80%AEevil", "/r/" + "A" * 22, "/r/", "/r/" + "x" * 7_000,
        "/r/..", "/r/%FF%FE",
    ]),
    st.builds(lambda t: "/r/" + quote(t, safe=""), HOSTILE_TEXT.filter(lambda t: len(t) < 7000)),
)
FLOODS = st.one_of(
    st.just(""),
    st.builds(lambda n, v: "?" + "&".join(f"url={quote(v, safe='')}" for _ in range(n)),
              st.integers(1, 300), st.sampled_from(["https://evil.example", "//evil.example",
                                                     "%0d%0a", "x"])),
    st.builds(lambda n: "?next=" + "y" * n, st.integers(1, 7_000)),
)


@given(target=LINK_TARGETS, flood=FLOODS, known=st.booleans())
@settings(BASE, max_examples=120)
def test_link_paths_redirect_only_to_the_stored_url(
    served: Served, target: str, flood: str, known: bool
) -> None:
    clicks = served.counts()["clicks"]
    path = f"/r/{served.token}" if known else target
    answer = served.request("GET", path + flood)
    assert answer.status is not None and answer.status < 500
    if answer.status == 302:
        assert known and answer.headers["location"] == LANDING
        assert served.counts()["clicks"] == clicks + 1
    else:
        assert "location" not in answer.headers
        assert served.counts()["clicks"] == clicks
        # Over aiohttp's 8190-byte request line: refused by its parser (400), not by us.
        assert answer.status in (400, 404, 405)


# --- example-based: the corpus, bounds, logs --------------------------------------------------

CORPUS = [
    pytest.param(b"GET /healthz?" + b"&a=1" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 {400, 200}, id="healthz-query-flood"),
    pytest.param(b"GET /report?days=" + b"9" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {200},
                 id="report-5000-digit-days"),
    pytest.param(b"GET /report?days=%C2%B2 HTTP/1.1\r\nHost: x\r\n\r\n", {200},
                 id="report-superscript-days"),
    pytest.param(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: \xff\xfe\x1b\r\n\r\n", {400},
                 id="metrics-binary-header"),
    pytest.param(b"POST /twilio/status HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                 {400}, id="negative-length"),
    pytest.param(b"POST /twilio/inbound HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"X-Twilio-Signature: x\r\nContent-Type: " + FORM.encode() + b"\r\n\r\n"
                 b"zz\r\nBody=1\r\n0\r\n\r\n", {400}, id="bad-chunk"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, {400},
                 id="tls-hello"),
    pytest.param(b"GARBAGE\r\n\r\n", {400}, id="not-http"),
    pytest.param(b"DELETE /twilio/status HTTP/1.1\r\nHost: x\r\n\r\n", {405}, id="delete"),
    pytest.param(b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", {404}, id="traversal"),
]


@pytest.mark.parametrize(("raw", "expected"), CORPUS)
def test_the_corpus_gets_no_server_error_and_changes_nothing(
    served: Served, raw: bytes, expected: set[int]
) -> None:
    counts = served.counts()
    answer = served.exchange(raw.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
    assert answer.status in expected, (answer.status, answer.body[:200])
    assert served.counts() == counts
    served.still_serves()


@pytest.mark.parametrize("body", [
    b"Body=" + b"x" * (LIMIT - 4), b"Body=" + b"x" * (1 << 20), b"Body=" + b"x" * (8 << 20),
    b"a=&" * 2000,  # 6 KB but 2,000 fields: over aiohttp's client_max_fields (1,000)
], ids=["limit+1", "1MB", "8MB", "2000-fields"])
def test_a_body_over_the_limits_is_refused_before_it_is_read(served: Served,
                                                              body: bytes) -> None:
    before, counts = served.refused(), served.counts()
    answer = served.request("POST", "/twilio/inbound", body,
                            {"Content-Type": FORM, "X-Twilio-Signature": "forged"})
    assert answer.status in (None, 413)  # None: reset while the rest was still being sent
    after = served.refused()
    assert after["too_large"] == before["too_large"] + 1
    assert served.counts() == counts
    served.still_serves()


def test_a_body_just_under_the_limit_is_read_and_judged(served: Served) -> None:
    form = inbound_form("SM" + "5" * 32, "x" * (LIMIT - 1000))
    assert len(urlencode(form)) < LIMIT
    assert served.post_signed("/twilio/inbound", form).status == 200


def test_each_refusal_is_one_log_line_with_its_reason_and_escaped_path(served: Served) -> None:
    before = served.refused()
    with capture_logs() as logs:
        served.request("POST", "/twilio/status?m=%0D%0A%E2%80%AE", b"x=1", {"Content-Type": FORM})
        served.request("POST", "/twilio/status", b"{}",
                       {"Content-Type": "application/json", "X-Twilio-Signature": "x"})
        served.request("POST", "/twilio/status", b"From=\xff",
                       {"Content-Type": FORM, "X-Twilio-Signature": "x"})
        served.request("POST", "/twilio/status", b"MessageSid=SM1",
                       {"Content-Type": FORM, "X-Twilio-Signature": "x"})
        served.post_signed("/twilio/inbound", {"MessageSid": "SM6", "From": "\u202e"})
        served.request("GET", "/r/nope")
    refused = [e for e in logs if e["event"] == "web.refused"]
    assert [(e["reason"], e["status"]) for e in refused] == [
        ("unsigned", 403), ("content_type", 415), ("malformed", 400), ("bad_signature", 403),
        ("incomplete", 400), ("unknown_link", 404)]
    assert refused[0]["path"] == "/twilio/status?m=%0D%0A%E2%80%AE"
    after = served.refused()
    assert {k: after[k] - before[k] for k in after} == {
        "unsigned": 1, "content_type": 1, "malformed": 1, "bad_signature": 1,
        "incomplete": 1, "unknown_link": 1, "too_large": 0}
    assert CUSTOMER not in repr(logs)
