"""The FastAGI server against a fake Asterisk speaking the AGI protocol on loopback.

Asterisk's side is played with plain asyncio streams: the environment block, then one answer
per command, until the server closes. Where Asterisk closes early, the fake shuts its
writing side down (FIN, what the server sees either way) and keeps reading, so the test can
await the server's close instead of sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
from structlog.testing import capture_logs

from hangupsms.agi import MAX_KEYS, MAX_VALUE, AgiRequestError, AgiServer, tag_variables
from hangupsms.calls import CallTracker
from hangupsms.models import TAG_EVENT, AmiEvent, CompletedCall
from tests.test_calls import BY_NAME, SETTINGS, assert_facts, load, replay

LINKEDID = "1796413158.86"  # transcript g's call
UNIQUEID = "1796413158.87"  # its channel that ran AGI()
CHANNEL = "Local/4006@from-pstn-0000001a;2"
TAG = "tag?order=A-1042&template=appointment"
GET_LINKEDID = "GET VARIABLE CHANNEL(linkedid)"
SET_OK = "SET VARIABLE HANGUPSMS_AGI ok"
DEADLINE = 5.0  # generous: a session that goes well takes milliseconds
SHORT = 0.2  # for the sessions that must be cut at the deadline
SAFETY = 10.0  # a test waiting longer than this has found a hang
# A loop turn longer than this means something blocked the loop; far above any scheduling
# hiccup of a loaded CI machine, far below a freeze.
MAX_GAP = 1.0


class Heartbeat:
    """Measures the longest gap between two turns of the event loop while it runs."""

    def __init__(self) -> None:
        self.ticks = 0
        self.max_gap = 0.0
        self._tick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._tick.clear()
        await self._tick.wait()  # the gap up to the end of the test is measured too
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.001)
            now = loop.time()
            self.max_gap = max(self.max_gap, now - last)
            last = now
            self.ticks += 1
            self._tick.set()


@dataclasses.dataclass(slots=True)
class Rig:
    server: AgiServer
    events: list[AmiEvent]
    beat: Heartbeat

    def counters(self) -> dict[str, int]:
        s = self.server
        return {"sessions": s.sessions, "tagged": s.tagged, "rejected": s.rejected,
                "errors": s.errors, "timeouts": s.timeouts, "hangups": s.hangups}


def counts(**nonzero: int) -> dict[str, int]:
    return {name: nonzero.get(name, 0)
            for name in ("sessions", "tagged", "rejected", "errors", "timeouts", "hangups")}


@asynccontextmanager
async def serving(deadline: float = DEADLINE, **options: Any) -> AsyncIterator[Rig]:
    """A started server on an ephemeral loopback port, with the loop's heartbeat watched."""
    events: list[AmiEvent] = []
    server = AgiServer(events.append, port=0, pbx="lab", deadline=deadline, **options)
    await server.start()
    async with Heartbeat() as beat:
        try:
            yield Rig(server, events, beat)
        finally:
            await server.close()
    assert beat.ticks > 0
    assert beat.max_gap < MAX_GAP, f"the event loop stalled for {beat.max_gap:.3f} s"


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with serving() as running:
        yield running


def environment(script: str | None = TAG, *, uniqueid: str = UNIQUEID) -> bytes:
    """The block Asterisk 22 sends a FastAGI server, in its order, ending with an empty line."""
    lines = ["agi_network: yes"]
    if script is not None:
        lines += [f"agi_network_script: {script}", f"agi_request: agi://127.0.0.1:4573/{script}"]
    lines += [
        f"agi_channel: {CHANNEL}", "agi_language: en", "agi_type: Local",
        f"agi_uniqueid: {uniqueid}", "agi_version: 22.10.1", "agi_callerid: +447700900999",
        "agi_calleridname: Frank", "agi_callingpres: 0", "agi_callingani2: 0",
        "agi_callington: 0", "agi_callingtns: 0", "agi_dnid: unknown", "agi_rdnis: unknown",
        "agi_context: from-pstn", "agi_extension: 4006", "agi_priority: 7",
        "agi_enhanced: 0.0", "agi_accountcode: ", "agi_threadid: 139872711046848",
    ]  # fmt: skip
    return "".join(f"{line}\n" for line in lines).encode() + b"\n"


def answers(linkedid: str = LINKEDID) -> dict[str, bytes]:
    return {GET_LINKEDID: f"200 result=1 ({linkedid})\n".encode(), SET_OK: b"200 result=1\n"}


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    data = b""
    async with asyncio.timeout(SAFETY):
        with suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def asterisk(
    port: int, script: str = TAG, *, uniqueid: str = UNIQUEID,
    replies: dict[str, bytes] | None = None,
) -> list[str]:
    """Play Asterisk for one AGI() call: the environment, an answer per command, until closed."""
    replies = answers() if replies is None else replies
    commands: list[str] = []
    async with connected(port) as (reader, writer), asyncio.timeout(SAFETY):
        writer.write(environment(script, uniqueid=uniqueid))
        while line := await reader.readline():
            command = line.decode().rstrip("\n")
            commands.append(command)
            writer.write(replies.get(command, b"510 Invalid or unknown command\n"))
            await writer.drain()
    return commands


# --- the requests --------------------------------------------------------------------------


async def test_tag_sends_the_calls_linkedid_and_variables_to_the_sink(rig: Rig) -> None:
    commands = await asterisk(rig.server.port)
    assert commands == [GET_LINKEDID, SET_OK]
    [event] = rig.events
    assert (event.pbx, event.name) == ("lab", TAG_EVENT)
    assert dict(event.headers) == {
        "Linkedid": LINKEDID, "Uniqueid": UNIQUEID, "Channel": CHANNEL,
        "HANGUPSMS_ORDER": "A-1042", "HANGUPSMS_TEMPLATE": "appointment",
    }  # fmt: skip
    assert rig.counters() == counts(sessions=1, tagged=1)


async def test_skip_sets_hangupsms_skip(rig: Rig) -> None:
    assert await asterisk(rig.server.port, "skip") == [GET_LINKEDID, SET_OK]
    [event] = rig.events
    assert event.headers["HANGUPSMS_SKIP"] == "1"
    assert event.headers["Linkedid"] == LINKEDID


async def test_notify_keeps_the_plus_of_the_number(rig: Rig) -> None:
    await asterisk(rig.server.port, "notify?to=+447700900123")
    [event] = rig.events
    assert event.headers["HANGUPSMS_NOTIFY"] == "+447700900123"


async def test_the_script_is_read_from_agi_request_when_agi_network_script_is_missing(
    rig: Rig,
) -> None:
    block = environment(TAG).replace(f"agi_network_script: {TAG}\n".encode(), b"")
    async with connected(rig.server.port) as (reader, writer):
        writer.write(block)
        assert await reader.readline() == f"{GET_LINKEDID}\n".encode()
        writer.write(answers()[GET_LINKEDID])
        assert await reader.readline() == f"{SET_OK}\n".encode()
        writer.write(b"200 result=1\n")
        assert await read_until_closed(reader) == b""
    assert rig.events[0].headers["HANGUPSMS_ORDER"] == "A-1042"


async def test_unknown_path_is_answered_with_nothing_and_counted(rig: Rig) -> None:
    with capture_logs() as logs:
        assert await asterisk(rig.server.port, "sms?to=1") == []
    assert rig.events == []
    assert rig.counters() == counts(sessions=1, rejected=1)
    assert [log["reason"] for log in logs if log["event"] == "agi.rejected"] == ["unknown_request"]


@pytest.mark.parametrize(
    ("script", "variables"),
    [
        ("tag?order=A-1042", {"HANGUPSMS_ORDER": "A-1042"}),
        ("/tag?Order_No=7&x=", {"HANGUPSMS_ORDER_NO": "7"}),  # empty values are not set
        ("tag?order=A%201042%2B&order=B", {"HANGUPSMS_ORDER": "B"}),  # the last one wins
        ("tag?name=a%0Ab%7F", {"HANGUPSMS_NAME": "ab"}),  # control characters are dropped
        ("tag?name=%E2%80%AEa%C2%85b%E2%80%A8", {"HANGUPSMS_NAME": "ab"}),  # bidi, C1, LS too
        ("tag?order=" + "9" * 300, {"HANGUPSMS_ORDER": "9" * MAX_VALUE}),
        ("tag?" + "&".join(f"k{i}=v" for i in range(MAX_KEYS)),
         {f"HANGUPSMS_K{i}": "v" for i in range(MAX_KEYS)}),
        ("skip", {"HANGUPSMS_SKIP": "1"}),
        ("notify?to=%2B447700900123", {"HANGUPSMS_NOTIFY": "+447700900123"}),
    ],
)  # fmt: skip
def test_tag_variables(script: str, variables: dict[str, str]) -> None:
    assert tag_variables(script) == variables


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("", "unknown_request"),
        ("hangupsms?order=A-1042", "unknown_request"),
        ("tag", "empty_tag"),
        ("tag?order=", "empty_tag"),
        ("tag?bad-key=1", "bad_key"),
        ("tag?=1", "bad_key"),
        ("tag?" + "&".join(f"k{i}=v" for i in range(MAX_KEYS + 1)), "too_many_keys"),
        ("skip?why=1", "unknown_request"),
        ("notify", "unknown_request"),
        ("notify?to=", "unknown_request"),
        ("notify?to=1&cc=2", "unknown_request"),
    ],
)
def test_tag_variables_refuses(script: str, reason: str) -> None:
    with pytest.raises(AgiRequestError) as refused:
        tag_variables(script)
    assert refused.value.reason == reason


# --- Asterisk hangs up, refuses or stalls ---------------------------------------------------


async def test_close_right_after_connecting_ends_the_session(rig: Rig) -> None:
    async with connected(rig.server.port) as (reader, writer):
        writer.write_eof()
        assert await read_until_closed(reader) == b""
    assert rig.events == []
    assert rig.counters() == counts(sessions=1, hangups=1)


async def test_close_in_the_middle_of_the_environment_ends_the_session(rig: Rig) -> None:
    async with connected(rig.server.port) as (reader, writer):
        writer.write(environment()[:200])
        writer.write_eof()
        assert await read_until_closed(reader) == b""
    assert rig.events == []
    assert rig.counters() == counts(sessions=1, hangups=1)


async def test_close_after_the_command_still_tags_the_call_by_its_uniqueid(rig: Rig) -> None:
    async with connected(rig.server.port) as (reader, writer):
        writer.write(environment())
        assert await reader.readline() == f"{GET_LINKEDID}\n".encode()
        writer.write_eof()
        assert await read_until_closed(reader) == b""
    [event] = rig.events
    assert "Linkedid" not in event.headers
    assert event.headers["Uniqueid"] == UNIQUEID
    assert event.headers["HANGUPSMS_TEMPLATE"] == "appointment"
    assert rig.counters() == counts(sessions=1, tagged=1, hangups=1)


@pytest.mark.parametrize(
    "answer",
    [
        b"HANGUP\n",
        b"511 Command Not Permitted on a dead channel or intercept routine\n",
        b"520-Invalid command syntax.  Proper usage follows:\nUsage: GET VARIABLE\n"
        b"520 End of proper usage.\n",
    ],
    ids=["hangup", "511", "520"],
)
async def test_hangup_or_refusal_ends_the_session_after_tagging_by_uniqueid(
    rig: Rig, answer: bytes
) -> None:
    commands = await asterisk(rig.server.port, replies={GET_LINKEDID: answer})
    assert commands == [GET_LINKEDID]
    [event] = rig.events
    assert "Linkedid" not in event.headers
    assert event.headers["Uniqueid"] == UNIQUEID
    assert rig.counters() == counts(sessions=1, tagged=1, hangups=1)


async def test_unset_linkedid_tags_by_uniqueid_and_still_confirms(rig: Rig) -> None:
    commands = await asterisk(rig.server.port, replies={
        GET_LINKEDID: b"200 result=0\n", SET_OK: b"200 result=1\n"})
    assert commands == [GET_LINKEDID, SET_OK]
    assert "Linkedid" not in rig.events[0].headers
    assert rig.counters() == counts(sessions=1, tagged=1)


async def test_unanswered_command_is_cut_at_the_deadline() -> None:
    async with serving(deadline=SHORT) as rig, connected(rig.server.port) as (reader, writer):
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(environment())
        assert await reader.readline() == f"{GET_LINKEDID}\n".encode()
        assert await read_until_closed(reader) == b""  # Asterisk never answered
        assert loop.time() - started >= SHORT
        [event] = rig.events
        assert "Linkedid" not in event.headers
        assert event.headers["Uniqueid"] == UNIQUEID
        assert rig.counters() == counts(sessions=1, tagged=1, timeouts=1)


async def test_a_slow_environment_is_cut_at_the_deadline() -> None:
    async with serving(deadline=SHORT) as rig, connected(rig.server.port) as (reader, writer):
        writer.write(environment()[:200])
        assert await read_until_closed(reader) == b""
        assert rig.events == []
        assert rig.counters() == counts(sessions=1, timeouts=1)


async def test_close_ends_the_sessions_in_progress() -> None:
    async with serving() as rig, connected(rig.server.port) as (reader, writer):
        writer.write(environment())
        assert await reader.readline() == f"{GET_LINKEDID}\n".encode()
        await rig.server.close()
        assert await read_until_closed(reader) == b""
        assert rig.counters() == counts(sessions=1, tagged=1)  # tagged by its Uniqueid


# --- garbage --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not_a_variable"),
        (b"\x00\x01\x02\x03\n\n", "not_a_variable"),
        (b": no name\n\n", "not_a_variable"),
        (b"agi_network: yes\n" * 201 + b"\n", "too_many_lines"),
        (b"agi_network: yes\n\n", "unknown_request"),
        (b"agi_network: yes\nagi_request: http://127.0.0.1/tag?order=1\n\n", "unknown_request"),
        (b"agi_network_script: \xff\xfe?\xff=1\n\n", "bad_key"),
    ],
    ids=["http", "binary", "no-name", "too-many-lines", "no-script", "not-agi", "not-utf8"],
)
async def test_garbage_is_rejected_without_a_command(rig: Rig, block: bytes, reason: str) -> None:
    with capture_logs() as logs:
        async with connected(rig.server.port) as (reader, writer):
            writer.write(block)
            assert await read_until_closed(reader) == b""
    assert rig.events == []
    assert rig.counters() == counts(sessions=1, rejected=1)
    assert [log["reason"] for log in logs if log["event"] == "agi.rejected"] == [reason]


async def test_invalid_utf8_in_a_value_is_replaced_not_fatal(rig: Rig) -> None:
    async with connected(rig.server.port) as (reader, writer):
        writer.write(environment().replace(b"order=A-1042", b"order=A-\xff1042"))
        assert await reader.readline() == f"{GET_LINKEDID}\n".encode()
        writer.write(answers()[GET_LINKEDID])
        assert await reader.readline() == f"{SET_OK}\n".encode()
        writer.write(b"200 result=1\n")
        assert await read_until_closed(reader) == b""
    assert rig.events[0].headers["HANGUPSMS_ORDER"] == "A-\ufffd1042"
    assert rig.counters() == counts(sessions=1, tagged=1)


async def test_a_one_megabyte_line_is_rejected(rig: Rig) -> None:
    with capture_logs() as logs:
        async with connected(rig.server.port) as (reader, writer):
            writer.write(b"agi_network_script: tag?order=" + b"9" * 1_000_000 + b"\n\n")
            assert await read_until_closed(reader) == b""
    assert rig.events == []
    assert rig.counters() == counts(sessions=1, rejected=1)
    assert [log["reason"] for log in logs if log["event"] == "agi.rejected"] == ["line_too_long"]


async def test_a_failing_sink_is_counted_and_the_server_keeps_serving() -> None:
    def broken(event: AmiEvent) -> None:
        raise RuntimeError("queue gone")

    server = AgiServer(broken, port=0, pbx="lab", deadline=DEADLINE)
    await server.start()
    try:
        with capture_logs() as logs:
            assert await asterisk(server.port) == [GET_LINKEDID]
            assert await asterisk(server.port) == [GET_LINKEDID]
    finally:
        await server.close()
    assert (server.sessions, server.errors, server.tagged) == (2, 2, 0)
    assert [log["event"] for log in logs if log["log_level"] == "error"] == [
        "agi.session_failed"] * 2


# --- load -----------------------------------------------------------------------------------


async def test_a_hundred_concurrent_sessions_are_all_answered(rig: Rig) -> None:
    sessions = [
        asterisk(rig.server.port, f"tag?order=A-{i}", uniqueid=f"1796413158.{1000 + i}")
        for i in range(100)
    ]
    results = await asyncio.gather(*sessions)
    assert results == [[GET_LINKEDID, SET_OK]] * 100
    orders = {e.headers["Uniqueid"]: e.headers["HANGUPSMS_ORDER"] for e in rig.events}
    assert orders == {f"1796413158.{1000 + i}": f"A-{i}" for i in range(100)}
    assert rig.counters() == counts(sessions=100, tagged=100)


async def test_the_server_binds_loopback_by_default() -> None:
    server = AgiServer(lambda event: None, port=0, pbx="lab")
    await server.start()
    try:
        assert server.host == "127.0.0.1"
        assert server.port != 0
    finally:
        await server.close()


# --- the tracker side -----------------------------------------------------------------------


def tag_event(**headers: str) -> AmiEvent:
    return AmiEvent("lab", TAG_EVENT, headers, 0.0)


def g_with(tag: AmiEvent) -> list[CompletedCall]:
    """Transcript g with `tag` received right after the dialplan ran AGI()."""
    events = load("g")
    at = next(i for i, e in enumerate(events)
              if e.name == "Newexten" and e.headers.get("Application") == "AGI")
    events.insert(at + 1, dataclasses.replace(tag, received_at=events[at].received_at))
    return replay(CallTracker("lab", SETTINGS), events)


def g_key_with(**variables: str) -> dict[str, Any]:
    key = BY_NAME["g"]
    return {**key, "variables": {**key["variables"], **variables}}


def test_a_tag_mid_call_adds_its_variables_to_the_call() -> None:
    [call] = g_with(tag_event(Linkedid=LINKEDID, Uniqueid=UNIQUEID, HANGUPSMS_EXTRA="yes"))
    assert_facts(call, g_key_with(HANGUPSMS_EXTRA="yes"))


def test_a_tag_without_linkedid_finds_the_call_by_its_uniqueid() -> None:
    [call] = g_with(tag_event(Uniqueid=UNIQUEID, Channel=CHANNEL, HANGUPSMS_EXTRA="yes"))
    assert_facts(call, g_key_with(HANGUPSMS_EXTRA="yes"))


def test_a_tag_for_an_unknown_call_is_ignored() -> None:
    [call] = g_with(tag_event(Linkedid="1796413999.1", Uniqueid="1796413999.1",
                              HANGUPSMS_EXTRA="yes"))
    assert_facts(call, BY_NAME["g"])


def test_only_hangupsms_headers_of_a_tag_become_variables() -> None:
    [call] = g_with(tag_event(Linkedid=LINKEDID, Uniqueid=UNIQUEID, Channel=CHANNEL,
                              HANGUPSMS_ROOM="7", HANGUPSMS_EMPTY="", Room="8"))
    assert_facts(call, g_key_with(HANGUPSMS_ROOM="7"))


def test_a_channel_variable_seen_after_a_tag_wins() -> None:
    # The ;2 leg carries ChanVariable(HANGUPSMS_ORDER)=A-1042 on every later event: the
    # channel's own value is the newest fact, as with two Set()s.
    [call] = g_with(tag_event(Linkedid=LINKEDID, HANGUPSMS_ORDER="B-7"))
    assert_facts(call, BY_NAME["g"])


def test_the_journal_keeps_tags() -> None:
    assert CallTracker("lab", SETTINGS).wants(TAG_EVENT)


async def test_a_tag_from_the_server_reaches_the_completed_call(rig: Rig) -> None:
    await asterisk(rig.server.port, "tag?extra=yes&order=A-1042")
    [call] = g_with(rig.events[0])
    assert_facts(call, g_key_with(HANGUPSMS_EXTRA="yes"))
