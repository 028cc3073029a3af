"""Hostile AMI bytes: the pure framing, then the real client against a hostile peer.

Framing is pure, so hypothesis drives it directly. The client runs against a tiny server on
127.0.0.1 that answers the login and then sends hostile bytes; a heartbeat task shares the
loop, and the loop's exception handler must stay silent (asyncio reports there a protocol
that raised in data_received, after killing its connection). The tracker's share of hostile
AMI input is in test_hostile_tracker.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hangupsms.ami import AmiConnection, ConnState
from hangupsms.config import PbxConfig
from hangupsms.frames import Frame, FrameSplitter, FrameTooLarge, decode_frame
from hangupsms.models import AmiEvent

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
CRLF2 = b"\r\n\r\n"
GUARD = 5.0  # seconds; only ever reached when something is broken
# Deterministic in CI: the same examples on every run, no example database.
BASE = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
# For properties expected to fail until a fix lands: report the first failure, no shrinking.
NO_SHRINK = settings(BASE, phases=[Phase.explicit, Phase.generate])


# --- framing -------------------------------------------------------------------------------

EVENT_NAMES = [b"Newchannel", b"Hangup", b"Cdr", b"CEL", b"", b"X" * 300, "Zoë".encode()]
TEXT_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
HEADER_NAMES = st.text("ActionIDEventChanVarbl-_()0123456789", min_size=1, max_size=16)
LINES = st.one_of(
    st.builds(lambda n, sp, v: n.encode() + b":" + sp + v,
              HEADER_NAMES, st.sampled_from([b"", b" ", b"  "]), TEXT_BYTES),
    TEXT_BYTES.map(lambda b: b.replace(b":", b"")),  # no colon: a malformed line
    st.sampled_from(EVENT_NAMES).map(lambda name: b"Event: " + name),
    st.sampled_from([b"\x00\x00", b"\xff\xfe\xc3", b"Name: \xe2\x82", b"A: \x00b", b":x"]),
).filter(lambda line: bool(line.strip(b"\r")))


def is_one_frame(raw: bytes) -> bool:
    return raw == raw.strip(b"\r\n") != b"" and b"\n\n" not in raw and CRLF2 not in raw


@st.composite
def frames(draw: st.DrawFn, limit: int) -> bytes:
    """One frame of at most `limit` bytes, sometimes padded to within 8 bytes of `limit`."""
    ending = draw(st.sampled_from([b"\r\n", b"\n"]))
    raw = ending.join(draw(st.lists(LINES, min_size=1, max_size=6)))
    if draw(st.booleans()):
        pad = draw(st.integers(limit - 8, limit)) - len(raw) - len(ending) - len(b"Pad: ")
        raw += ending + b"Pad: " + b"p" * max(pad, 0)
    if not (is_one_frame(raw) and len(raw) <= limit):
        raw = b"Event: Fallback"
    return raw


def split_in_chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(stream), *(cut for cut in cuts if 0 < cut < len(stream))})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def malformed_lines(raw: bytes) -> int:
    """Non-empty lines without a header name before a colon, counted independently."""
    count = 0
    for line in raw.decode("utf-8", "replace").split("\n"):
        line = line.rstrip("\r")
        if line and (":" not in line or not line.split(":", 1)[0].strip()):
            count += 1
    return count


def feed_all(splitter: FrameSplitter, chunks: list[bytes]) -> list[bytes]:
    """Feed chunk by chunk; the buffer never holds more than a frame and a partial separator."""
    out: list[bytes] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
        assert len(splitter._buf) <= splitter.max_bytes + 3
    return out


MAX = 256
SPLIT_SLACK = [
    pytest.param(3, id="frames-up-to-max-minus-3"),
    pytest.param(0, id="frames-up-to-max"),
]


@pytest.mark.parametrize("slack", SPLIT_SLACK)
@given(data=st.data())
@settings(NO_SHRINK, max_examples=150)
def test_chunk_boundaries_never_change_the_frames(slack: int, data: st.DataObject) -> None:
    items = data.draw(st.lists(frames(MAX - slack), min_size=1, max_size=8))
    stream, cuts = BANNER, data.draw(st.lists(st.integers(0, 4000), max_size=20))
    for raw in items:
        stream += raw
        # Reads that end near a frame's end (inside its separator) are the interesting ones.
        cuts += data.draw(st.lists(st.integers(len(stream) - 2, len(stream) + 3), max_size=2))
        stream += data.draw(st.sampled_from([CRLF2, b"\n\n"]))
    whole = FrameSplitter(MAX)
    assert whole.feed(stream) == items
    chunked = FrameSplitter(MAX)
    assert feed_all(chunked, split_in_chunks(stream, cuts)) == items
    assert chunked.banner == whole.banner == BANNER.decode().strip()


HOSTILE_PIECES = st.sampled_from([
    b"\r\n", b"\n", b"\r", CRLF2, b"\n\n", b"\x00", b"\xff\xfe", b"\xc3", b":", b": ",
    b"Event: X", b"ActionID: 1", b"x" * 300, b"\r" * 50, BANNER,
])
HOSTILE_STREAMS = st.lists(st.one_of(HOSTILE_PIECES, st.binary(max_size=64)), max_size=60)


@given(pieces=HOSTILE_STREAMS, banner=st.booleans(), data=st.data())
@settings(BASE, max_examples=400)
def test_random_bytes_yield_clean_frames_or_frame_too_large(
    pieces: list[bytes], banner: bool, data: st.DataObject
) -> None:
    stream = (BANNER if banner else b"") + b"".join(pieces)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    splitter = FrameSplitter(1024)
    for chunk in split_in_chunks(stream, cuts):
        try:
            out = splitter.feed(chunk)
        except FrameTooLarge:
            splitter.reset()  # what a new connection does
            continue
        assert len(splitter._buf) <= 1024 + 3
        for raw in out:
            assert is_one_frame(raw) and len(raw) <= 1024
            frame = decode_frame(raw)
            assert frame.malformed_lines == malformed_lines(raw)
            for name, value in frame.headers:
                assert name and name == name.strip() and ":" not in name
                assert "\n" not in name + value and value == value.strip()


@pytest.mark.parametrize(("stream", "chunk"), [
    (b"x" * (1 << 20), 1 << 20),
    (b"x" * (1 << 20), 4096),
    (b"Event: A\r\nBlob: " + b"y" * (1 << 20) + CRLF2, 65536),
    (b"\r" * (1 << 20), 65536),
    (b"\r\n\r" * 50_000, 65536),
], ids=["1MB-line-one-read", "1MB-line-4k-reads", "1MB-header", "1MB-of-CR", "CRLF-CR-runs"])
def test_a_megabyte_without_a_frame_end_is_refused_in_bounded_memory(
    stream: bytes, chunk: int
) -> None:
    splitter = FrameSplitter(4096)
    splitter.feed(BANNER)
    fed = 0
    with pytest.raises(FrameTooLarge):  # the connection is then dropped: stop, as it does
        for fed in range(0, len(stream), chunk):
            assert splitter.feed(stream[fed:fed + chunk]) == []
            assert len(splitter._buf) <= 4096
    assert fed < 4096 + chunk  # refused as soon as the limit was passed
    assert len(splitter._buf) == 0


def test_odd_but_readable_frames_decode_with_their_drops_counted() -> None:
    stream = (BANNER + b"Event: A\nX: 1\n\n"  # bare LF
              + b"Event: B\r\nno colon here\r\n: empty name\r\nV: a\x00b\r\n\r\n"
              + b"Event: C\r\nName: \xff\xfeok\r\nBig: " + b"z" * 4000 + CRLF2)
    raws = FrameSplitter(4096).feed(stream)
    decoded = [decode_frame(raw) for raw in raws]
    assert [f.first("Event") for f in decoded] == ["A", "B", "C"]
    assert [f.malformed_lines for f in decoded] == [0, 2, 0]
    assert decoded[1].first("V") == "a\x00b"
    assert decoded[2].first("Name") == "\ufffd\ufffdok"
    assert decoded[2].first("Big") == "z" * 4000


def test_a_read_ending_inside_the_separator_of_a_max_size_frame_is_not_refused() -> None:
    splitter = FrameSplitter(256)
    splitter.feed(BANNER)
    frame = b"Event: X\r\nPad: " + b"p" * 241
    assert len(frame) == 256
    assert splitter.feed(frame + b"\r\n\r") == []
    assert splitter.feed(b"\n") == [frame]


# --- the real client against a hostile server ----------------------------------------------

SENTINEL = b"Event: Sentinel\r\nSeq: 1" + CRLF2


class Heartbeat:
    """A task that ticks on every pass of the event loop; a stalled loop stops it."""

    def __init__(self) -> None:
        self.ticks = 0
        self._moved = asyncio.Event()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.ticks += 1
            self._moved.set()
            self._moved = asyncio.Event()

    async def beats(self, count: int) -> None:
        target = self.ticks + count
        while self.ticks < target:
            await self._moved.wait()


def success(action: Frame) -> bytes:
    return f"Response: Success\r\nActionID: {action.first('ActionID')}\r\n".encode()


class HostileAmi:
    """An AMI peer on 127.0.0.1: banner, any login accepted, then on the first connection
    `chunks` (one write each, two heartbeats apart), then a Sentinel event on every one.
    Every action is answered by `answer(action)`, by default a bare success."""

    def __init__(self, chunks: list[bytes], heartbeat: Heartbeat,
                 answer: Callable[[Frame], bytes] | None = None) -> None:
        self.chunks = chunks
        self.heartbeat = heartbeat
        self.answer = answer or success
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[HostileAmi]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            self._server.close()
            for writer in self._open:
                writer.transport.abort()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open.add(writer)
        try:
            writer.write(BANNER)
            login = decode_frame((await reader.readuntil(CRLF2))[:-4])
            writer.write(f"Response: Success\r\nActionID: {login.first('ActionID')}\r\n"
                         "Message: Authentication accepted\r\n\r\n".encode())
            for chunk in self.chunks if self.connections == 1 else []:
                writer.write(chunk)
                await writer.drain()
                await self.heartbeat.beats(2)
            writer.write(SENTINEL)
            while True:
                action = decode_frame((await reader.readuntil(CRLF2))[:-4])
                writer.write(self.answer(action) + b"\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up or dropped us: every session ends so
        finally:
            self._open.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class Client:
    """AmiConnection with a sink that records events and notices the Sentinel."""

    def __init__(self, port: int) -> None:
        self.events: list[str] = []
        self.sentinel = asyncio.Event()
        pbx = PbxConfig(name="pbx1", port=port, username="u", secret="s",
                        reconnect_min=0.01, reconnect_max=0.05, ping_interval=60.0,
                        max_frame_bytes=4096)
        self.connection = AmiConnection(pbx, self._sink)

    def _sink(self, event: AmiEvent) -> None:
        if event.name.startswith("@"):
            return  # the client's own connection events
        self.events.append(event.name)
        if event.name == "Sentinel":
            self.sentinel.set()


@contextlib.asynccontextmanager
async def hostile_session(chunks: list[bytes], answer: Callable[[Frame], bytes] | None = None
                          ) -> AsyncIterator[tuple[HostileAmi, Client, list[dict[str, Any]]]]:
    """Server, client and heartbeat running; yields the loop's reported errors too."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    heartbeat = Heartbeat()
    beating = asyncio.create_task(heartbeat.run())
    try:
        async with HostileAmi(chunks, heartbeat, answer).serving() as server:
            client = Client(server.port)
            runner = asyncio.create_task(client.connection.run())
            try:
                yield server, client, errors
            finally:
                await asyncio.wait_for(client.connection.close(), GUARD)
                await asyncio.wait_for(runner, GUARD)
        assert not beating.done()  # the heartbeat never died
        assert heartbeat.ticks >= 2 * len(chunks)
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        loop.set_exception_handler(previous)


def expected_counts(items: list[bytes]) -> tuple[int, int, int]:
    """(events, dropped frames, malformed lines) the client must count for `items`."""
    decoded = [decode_frame(raw) for raw in items]
    events = sum(frame.first("Event") is not None for frame in decoded)
    return events, len(decoded) - events, sum(frame.malformed_lines for frame in decoded)


async def run_hostile(items: list[bytes], oversize: bool, cuts: list[int]) -> None:
    payload = b"".join(raw + CRLF2 for raw in items)
    if oversize:
        payload += b"Event: Huge\r\nBlob: " + b"h" * 10_000 + CRLF2
    async with hostile_session(split_in_chunks(payload, cuts)) as (server, client, errors):
        await asyncio.wait_for(client.sentinel.wait(), GUARD)
        stats = client.connection.stats
        events, dropped, malformed = expected_counts(items)
        assert (stats.events, stats.dropped_frames) == (events + 1, dropped)
        assert stats.malformed_lines == malformed
        assert stats.frames_too_large == int(oversize)
        assert (client.connection.connects, server.connections) == (1 + oversize,) * 2
        assert client.events[-1] == "Sentinel"
    assert errors == []


def not_shutdown(raw: bytes) -> bool:
    return (decode_frame(raw).first("Event") or "").lower() != "shutdown"


@given(items=st.lists(frames(2048).filter(not_shutdown), max_size=12), oversize=st.booleans(),
       cuts=st.lists(st.integers(0, 30_000), max_size=12))
@settings(BASE, max_examples=40)
def test_the_client_survives_or_resets_cleanly_and_counts_what_it_dropped(
    items: list[bytes], oversize: bool, cuts: list[int]
) -> None:
    asyncio.run(run_hostile(items, oversize, cuts))


@pytest.mark.parametrize(("payload", "counts"), [
    (b"x" * (1 << 20), (0, 0, 0, 1)),
    (b"Event: A\r\nno colon\r\n\x00\x00\r\nN: \xff\xfe" + CRLF2 + b"Event: B\nX: 1\n\n"
     + b"Response: Success\r\nActionID: nobody" + CRLF2, (2, 1, 2, 0)),
], ids=["1MB-line", "garbage-frames"])
async def test_hostile_bytes_after_login_are_counted_and_the_loop_keeps_going(
    payload: bytes, counts: tuple[int, int, int, int]
) -> None:
    async with hostile_session(split_in_chunks(payload, [1, 7, 5000])) as (_, client, errors):
        await asyncio.wait_for(client.sentinel.wait(), GUARD)
        stats = client.connection.stats
        assert (stats.events - 1, stats.dropped_frames, stats.malformed_lines,
                stats.frames_too_large) == counts
        assert client.connection.connects == 1 + counts[3]
        assert client.connection.state is ConnState.READY
    assert errors == []


def pong_with_a_repeated_action_id(action: Frame) -> bytes:
    if action.first("Action") != "Ping":
        return success(action)
    return success(action) + f"ActionID: {action.first('ActionID')}\r\n".encode()


async def test_a_response_with_a_repeated_header_does_not_kill_the_connection() -> None:
    async with hostile_session([], pong_with_a_repeated_action_id) as (server, client, errors):
        await asyncio.wait_for(client.sentinel.wait(), GUARD)
        answer = await client.connection.send_action({"Action": "Ping"})
        assert answer["Response"] == "Success"
        assert server.connections == 1
    assert errors == []
