"""FastAGI server: the dialplan tags a live call, `AGI(agi://127.0.0.1:4573/tag?order=A-1042)`.

Asterisk connects, sends the AGI environment (`agi_network_script: tag?order=A-1042`, …, an
empty line), then waits for our commands. We ask for the call's Linkedid, hand a `@Tag`
event to the sink (the daemon queues it with the AMI events, so the tracker sees it in
order), confirm with `SET VARIABLE HANGUPSMS_AGI ok` and close: the dialplan goes on when
the connection closes. Every session is bounded by `deadline` seconds, whatever the peer
does. Written on asyncio streams: panoramisk's FastAGI server can freeze the loop when
Asterisk closes early. There is no authentication in FastAGI: bind to loopback.

Paths: `tag?k=v&…` sets HANGUPSMS_K for each key; `skip` sets HANGUPSMS_SKIP=1;
`notify?to=+44…` sets HANGUPSMS_NOTIFY, the numbers (comma-separated) a rule with
`to: notify` texts (see `planner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import unicodedata
from collections.abc import Callable
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

import structlog

from hangupsms.models import TAG_EVENT, AmiEvent

log = structlog.get_logger(__name__)

AGI_PORT = 4573
VAR_PREFIX = "HANGUPSMS_"
MAX_KEYS = 32  # query parameters per request
MAX_VALUE = 256  # characters per value; longer ones are cut (with a warning)
SHOWN = 80  # characters of a refused line or answer quoted in the log
# Removed from values (they become message text): controls (CR, LF, ESC…), format
# characters (bidi overrides such as U+202E), lone surrogates, line/paragraph separators.
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")
# `200 result=1 (1796413158.86)`; the parenthesised part is absent when there is no value.
_SUCCESS = re.compile(r"200 result=(-?\d+)(?:\s+\((.*)\))?")
# Asterisk's call ids: `1796413158.86`, or `pbx1-1796413158.86` with `systemname` set. Any
# other answer is not one (and must not become a key the tracker looks calls up by).
_CALL_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_CHANNEL = 256  # characters of agi_channel kept
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_CLOSE_ERRORS = (OSError, asyncio.IncompleteReadError)


class AgiRequestError(ValueError):
    """A request we refuse: malformed environment, unknown path or bad query."""

    def __init__(self, reason: str, detail: str = "") -> None:
        detail = printable(detail)
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def printable(text: str) -> str:
    """At most `SHOWN` characters of `text`, controls and bidi characters escaped (`\\x1b`)."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode()
                   for char in text[:SHOWN])


def tag_variables(script: str) -> dict[str, str]:
    """The call variables a FastAGI script asks for: `tag?order=A-1` -> {HANGUPSMS_ORDER: A-1}."""
    return parse_request(script)[0]


def parse_request(script: str) -> tuple[dict[str, str], list[str]]:
    """The variables `script` sets, and the keys whose values were trimmed to be kept."""
    path, _, query = script.partition("?")
    path = path.strip("/")
    params, trimmed = _query(query)
    if path == "tag":
        variables = {VAR_PREFIX + key.upper(): value for key, value in params if value}
        if not variables:
            raise AgiRequestError("empty_tag", script)
        return variables, trimmed
    if path == "skip" and not params:
        return {VAR_PREFIX + "SKIP": "1"}, trimmed
    if path == "notify" and [key for key, _ in params] == ["to"] and params[0][1]:
        return {VAR_PREFIX + "NOTIFY": params[0][1]}, trimmed
    raise AgiRequestError("unknown_request", script)


def _query(query: str) -> tuple[list[tuple[str, str]], list[str]]:
    pairs = [pair for pair in query.split("&") if pair]
    if len(pairs) > MAX_KEYS:
        raise AgiRequestError("too_many_keys", str(len(pairs)))
    params: list[tuple[str, str]] = []
    trimmed: list[str] = []
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if not _KEY.fullmatch(key):
            raise AgiRequestError("bad_key", key)
        # unquote, not unquote_plus: in `to=+447700900123` the `+` is the number's, not a space.
        decoded = unquote(raw, errors="replace")
        value = "".join(ch for ch in decoded if unicodedata.category(ch) not in _UNSAFE)
        if len(value) > MAX_VALUE:
            log.warning("agi.value_capped", key=key, length=len(value), limit=MAX_VALUE)
            value = value[:MAX_VALUE]
        if value != decoded:
            trimmed.append(key)
        params.append((key, value))
    return params, trimmed


def script_of(env: dict[str, str]) -> str:
    """The script part of the request (`tag?order=A-1042`) from the AGI environment."""
    script = env.get("agi_network_script")
    if script:
        return script
    try:
        parts = urlsplit(env.get("agi_request", ""))
    except ValueError:  # `agi://[::1/…`: an unclosed IPv6 bracket
        return ""
    if parts.scheme not in ("agi", "hagi"):
        return ""
    return parts.path.lstrip("/") + (f"?{parts.query}" if parts.query else "")


def _call_id(value: str) -> str:
    """`value` when it has the shape of an Asterisk Uniqueid or Linkedid, else ""."""
    return value if _CALL_ID.fullmatch(value) else ""


class AgiServer:
    """FastAGI on `host:port`; each tag goes to `sink` as an `@Tag` AmiEvent of PBX `pbx`."""

    def __init__(
        self, sink: Callable[[AmiEvent], None], *, host: str = "127.0.0.1",
        port: int = AGI_PORT, pbx: str, deadline: float = 0.5, max_line: int = 4096,
        max_env_lines: int = 200, max_env_bytes: int = 32768, max_sessions: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(deadline, max_line, max_env_lines, max_env_bytes, max_sessions) <= 0:
            raise ValueError("deadline and the max_* limits must be positive")
        self._sink = sink
        self.host = host
        self._port = port
        self.pbx = pbx
        self.deadline = deadline
        self.max_line = max_line
        self.max_env_lines = max_env_lines
        # With max_line, these bound what hostile peers can make us hold: about
        # max_sessions * (max_env_bytes + 2 * max_line) bytes, each for `deadline` at most.
        self.max_env_bytes = max_env_bytes
        self.max_sessions = max_sessions
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        # Each session ends as exactly one of completed, rejected, timeouts, hangups,
        # errors or busy, and all but completed log why (agi.rejected, agi.timeout, …).
        self.sessions = 0  # connections accepted
        self.completed = 0  # tag given and confirmed to Asterisk
        self.tagged = 0  # @Tag events handed to the sink
        self.trimmed = 0  # requests with a value cut to MAX_VALUE or stripped of controls
        self.rejected = 0  # garbage, unknown paths, bad queries
        self.errors = 0  # unexpected failures (logged with a traceback)
        self.timeouts = 0  # sessions cut at the deadline
        self.hangups = 0  # Asterisk closed or hung up before we were done
        self.busy = 0  # connections closed at once: max_sessions were in progress

    @property
    def port(self) -> int:
        """The listening port (the one the system chose when 0 was asked), once started."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; raises OSError when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("AgiServer already started")
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port, limit=self.max_line
        )
        self._port = self.port
        if self.host not in _LOOPBACK:
            log.warning("agi.listening_beyond_loopback", host=self.host)
        log.info("agi.listening", host=self.host, port=self._port, deadline=self.deadline)

    async def close(self) -> None:
        """Stop listening and end the sessions in progress."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()
        log.info("agi.closed", sessions=self.sessions, completed=self.completed,
                 tagged=self.tagged, trimmed=self.trimmed, rejected=self.rejected,
                 errors=self.errors, timeouts=self.timeouts, hangups=self.hangups,
                 busy=self.busy)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        peer = str(writer.get_extra_info("peername"))
        if len(self._tasks) >= self.max_sessions:
            # AGI() fails at once and the call goes on, rather than every session slowing.
            self.busy += 1
            log.warning("agi.busy", limit=self.max_sessions, peer=peer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except AgiRequestError as refused:
            self.rejected += 1
            log.warning("agi.rejected", reason=refused.reason, detail=refused.detail, peer=peer)
        except TimeoutError:
            self.timeouts += 1
            log.warning("agi.timeout", deadline=self.deadline, peer=peer)
        except _CLOSE_ERRORS as exc:
            self.hangups += 1
            log.info("agi.hung_up", error=type(exc).__name__, peer=peer)
        except Exception:  # one broken session must not stop the server; CancelledError passes
            self.errors += 1
            log.exception("agi.session_failed", peer=peer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        when = asyncio.get_running_loop().time() + self.deadline
        async with asyncio.timeout_at(when):
            env = await self._environment(reader)
        if env is None:
            self.hangups += 1
            log.info("agi.hung_up", stage="environment")
            return
        variables, trimmed = parse_request(script_of(env))
        if trimmed:
            self.trimmed += 1
            log.warning("agi.values_trimmed", keys=trimmed)
        linkedid: str | None = None
        try:
            async with asyncio.timeout_at(when):
                linkedid = await self._command(reader, writer, "GET VARIABLE CHANNEL(linkedid)")
        finally:
            # Even without the Linkedid (Asterisk hung up or was slow), the tracker finds the
            # call through the AGI channel's Uniqueid.
            self._emit(env, variables, linkedid or "")
        if linkedid is None:
            self.hangups += 1
            log.info("agi.hung_up", stage="linkedid")
            return
        async with asyncio.timeout_at(when):
            confirmed = await self._command(reader, writer, f"SET VARIABLE {VAR_PREFIX}AGI ok")
        if confirmed is None:
            self.hangups += 1
            log.info("agi.hung_up", stage="confirm")
            return
        self.completed += 1

    def _emit(self, env: dict[str, str], variables: dict[str, str], linkedid: str) -> None:
        uniqueid = _call_id(env.get("agi_uniqueid", ""))
        linkedid = _call_id(linkedid)
        if not linkedid and not uniqueid:
            raise AgiRequestError("no_call_id", "neither a Linkedid nor agi_uniqueid")
        headers = {"Uniqueid": uniqueid, "Channel": env.get("agi_channel", "")[:MAX_CHANNEL]}
        if linkedid:
            headers["Linkedid"] = linkedid
        headers.update(variables)
        self._sink(AmiEvent(self.pbx, TAG_EVENT, MappingProxyType(headers), self._clock()))
        self.tagged += 1
        log.info("agi.tagged", linkedid=linkedid, uniqueid=uniqueid, variables=sorted(variables))

    async def _environment(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        """The `name: value` lines up to the empty one; None when the peer closed first."""
        env: dict[str, str] = {}
        size = 0
        for _ in range(self.max_env_lines + 1):
            line = await self._line(reader)
            if line is None:
                return None
            if not line:
                return env
            size += len(line) + 1
            if size > self.max_env_bytes:
                raise AgiRequestError("environment_too_large", f"> {self.max_env_bytes} bytes")
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise AgiRequestError("not_a_variable", line[:80])
            env[name.strip()] = value.strip()
        raise AgiRequestError("too_many_lines", str(self.max_env_lines))

    async def _line(self, reader: asyncio.StreamReader) -> str | None:
        """One line without its end, None at EOF; longer than the reader's limit is refused."""
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            raise AgiRequestError("line_too_long", f"> {self.max_line} bytes") from None
        return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")

    async def _command(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str
    ) -> str | None:
        """Send one AGI command; its value ("" when none), or None when Asterisk is done with us.

        Done means: the connection closed, `HANGUP` (the channel hung up), or any answer but
        200 (`511` dead channel, `520` usage, `510` unknown).
        """
        writer.write(command.encode() + b"\n")
        await writer.drain()
        line = await self._line(reader)
        if line is None or line == "HANGUP":
            return None
        match = _SUCCESS.match(line)
        if match is None:
            log.warning("agi.command_refused", command=command.split(" ", 1)[0],
                        answer=printable(line))
            return None
        return (match.group(2) or "") if match.group(1) == "1" else ""
