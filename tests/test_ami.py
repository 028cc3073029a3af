"""The hardened AMI client (real panoramisk) against the fake AMI server on loopback.

Each panoramisk 1.4 defect named in hangupsms/ami.py has a test here proving the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from hangupsms.ami import (
    AmiActionTimeout,
    AmiConnection,
    AmiConnectionLost,
    AmiNotConnected,
    AmiNotSent,
    AmiStats,
    AmiStreamProtocol,
    ConnState,
    EventQueue,
    backoff_delay,
)
from hangupsms.config import PbxConfig
from hangupsms.frames import event_frames, read_transcript
from hangupsms.models import DISCONNECTED_EVENT, AmiEvent
from hangupsms.replay import AmiReplayServer

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
ALL_TRANSCRIPTS = sorted(FIXTURES.glob("*.ami"))
USER, SECRET = "hangupsms", "s3cret"
GUARD = 5.0  # seconds; only ever reached when something is broken
ZOE = 'Zoë; DROP TABLE \\"x\\" {{7*7}}'  # as channel events C-escape it


def pbx_for(server: AmiReplayServer, name: str = "pbx1", **changes: Any) -> PbxConfig:
    """Fast retries, no pings unless a test asks for them."""
    base = PbxConfig(name=name, host="127.0.0.1", port=server.port, username=USER,
                     secret=SECRET, reconnect_min=0.01, reconnect_max=0.05,
                     ping_interval=60.0, ping_timeout=5.0, login_failure_delay=60.0)
    return dataclasses.replace(base, **changes)


def expected_headers(*paths: Path) -> list[dict[str, str]]:
    return [frame.as_dict() for path in paths for frame in event_frames(path)]


@contextlib.asynccontextmanager
async def running(connection: AmiConnection) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(connection.run())
    try:
        yield task
    finally:
        await asyncio.wait_for(connection.close(), GUARD)
        await asyncio.wait_for(task, GUARD)


async def take(queue: EventQueue, count: int) -> list[AmiEvent]:
    """The next `count` Asterisk events; the client's own `@` connection events are skipped."""
    taken: list[AmiEvent] = []
    while len(taken) < count:
        event = await asyncio.wait_for(queue.get(), GUARD)
        if not event.name.startswith("@"):
            taken.append(event)
    return taken


def asterisk_events_left(queue: EventQueue) -> list[AmiEvent]:
    """What is queued now, less the client's own `@` connection events."""
    left = [queue.get_nowait() for _ in range(queue.qsize())]
    return [event for event in left if not event.name.startswith("@")]


def write_transcript(path: Path, frames: list[bytes]) -> Path:
    body = b"".join(frame + b"\r\n\r\n" for frame in frames)
    path.write_bytes(b"Asterisk Call Manager/11.0.0\r\n" + body)
    return path


def event(name: str, **headers: str) -> bytes:
    lines = [f"Event: {name}", *(f"{key}: {value}" for key, value in headers.items())]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(("paths", "chunk_size"), [
    (ALL_TRANSCRIPTS, None),
    ([FIXTURES / "a.ami"], 7),
], ids=["all-transcripts-whole", "a-7-byte-chunks"])
async def test_every_event_arrives_in_order_with_its_headers(
        paths: list[Path], chunk_size: int | None) -> None:
    ticks = itertools.count(1)
    async with AmiReplayServer(paths, username=USER, secret=SECRET,
                               chunk_size=chunk_size) as server:
        queue = EventQueue(10_000)
        connection = AmiConnection(pbx_for(server), queue.put, clock=lambda: float(next(ticks)))
        expected = expected_headers(*paths)
        async with running(connection):
            events = await take(queue, len(expected))
            assert [dict(e.headers) for e in events] == expected
            assert [e.name for e in events] == [h["Event"] for h in expected]
            assert {e.pbx for e in events} == {"pbx1"}
            times = [e.received_at for e in events]
            assert times == sorted(set(times))  # our clock, one tick per event, in order
            assert connection.stats.events == len(expected)
            assert (connection.connects, connection.stats.dropped_frames) == (1, 0)
            assert connection.banner == "Asterisk Call Manager/11.0.0"
            assert asterisk_events_left(queue) == []


@pytest.mark.parametrize("chunk_size", [1, 7])
async def test_unicode_caller_name_survives_tiny_tcp_chunks(
        tmp_path: Path, chunk_size: int) -> None:
    # panoramisk decodes each TCP chunk alone with errors="ignore": "ë" cut in two is lost.
    frames = [raw for raw in read_transcript(FIXTURES / "h_unicode.ami")[1]
              if "Zoë".encode() in raw and raw.startswith(b"Event:")]
    assert len(frames) >= 5
    path = write_transcript(tmp_path / "zoe.ami", frames)
    async with AmiReplayServer([path], username=USER, secret=SECRET,
                               chunk_size=chunk_size) as server:
        queue = EventQueue(1000)
        async with running(AmiConnection(pbx_for(server), queue.put)):
            events = await take(queue, len(frames))
    assert [dict(e.headers) for e in events] == expected_headers(path)
    names = {e.get("CallerIDName") for e in events} | {e.get("ConnectedLineName") for e in events}
    assert ZOE in names
    assert not any("\ufffd" in value for e in events for value in e.headers.values())


async def test_a_multibyte_character_split_between_reads_is_decoded_whole() -> None:
    received: list[AmiEvent] = []
    protocol = AmiStreamProtocol("pbx1", received.append, AmiStats(), max_frame_bytes=4096,
                                 clock=lambda: 0.0)
    stream = ("Asterisk Call Manager/11.0.0\r\nEvent: NewCallerid\r\n"
              f"CallerIDName: {ZOE}\r\n\r\n").encode()
    for index in range(len(stream)):
        protocol.data_received(stream[index:index + 1])
    assert [e.get("CallerIDName") for e in received] == [ZOE]
    assert protocol.banner.result() == "Asterisk Call Manager/11.0.0"


async def test_frames_before_an_oversize_one_in_the_same_read_are_kept() -> None:
    received: list[AmiEvent] = []
    stats = AmiStats()
    protocol = AmiStreamProtocol("pbx1", received.append, stats, max_frame_bytes=100,
                                 clock=lambda: 0.0)
    good = b"".join(event("Good", Seq=str(n)) + b"\r\n\r\n" for n in range(3))
    huge = event("Huge", Blob="x" * 300) + b"\r\n\r\n"
    protocol.data_received(b"Asterisk Call Manager/11.0.0\r\n" + good + huge + good)
    assert [e.get("Seq") for e in received] == ["0", "1", "2"]
    assert stats.frames_too_large == 1
    assert protocol.lost.result() == "frame_too_large"


async def test_a_sink_that_raises_does_not_drop_the_connection() -> None:
    # panoramisk lets a callback's exception escape data_received, killing the connection.
    path = FIXTURES / "a.ami"
    expected = expected_headers(path)
    delivered: list[AmiEvent] = []
    all_seen = asyncio.Event()
    calls = itertools.count(1)

    def fragile_sink(event: AmiEvent) -> None:
        if event.name.startswith("@"):
            return  # the client's own connection events; this test is about Asterisk's
        call = next(calls)
        if call == len(expected):
            all_seen.set()
        if call % 10 == 0:
            raise ValueError(f"sink bug on event {call}")
        delivered.append(event)

    async with AmiReplayServer([path], username=USER, secret=SECRET) as server:
        connection = AmiConnection(pbx_for(server), fragile_sink)
        with capture_logs() as logs:
            async with running(connection):
                await asyncio.wait_for(all_seen.wait(), GUARD)
                pong = await connection.send_action({"Action": "Ping"})
                assert connection.state is ConnState.READY
        failures = len(expected) // 10
        assert pong["Ping"] == "Pong"
        assert connection.stats.sink_errors == failures
        assert [dict(e.headers) for e in delivered] == [
            h for i, h in enumerate(expected, 1) if i % 10]
        assert (server.connections, connection.connects) == (1, 1)
        sink_errors = [entry for entry in logs if entry["event"] == "ami.sink_error"]
        assert len(sink_errors) == failures
        assert all(entry["exc_info"] for entry in sink_errors)


async def test_a_coroutine_sink_is_refused_up_front() -> None:
    # panoramisk would start the coroutine and drop it (fire-and-forget).
    async def async_sink(event: AmiEvent) -> None:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="plain function"):
        AmiConnection(PbxConfig(name="pbx1"), async_sink)  # type: ignore[arg-type]


async def test_events_are_handed_over_synchronously_no_task_per_event() -> None:
    path = FIXTURES / "c.ami"
    tasks_seen: set[asyncio.Task[Any] | None] = set()
    queue = EventQueue(1000)

    def sink(event: AmiEvent) -> None:
        if not event.name.startswith("@"):  # the client's own events come from its tasks
            tasks_seen.add(asyncio.current_task())  # None: called from the protocol
        queue.put(event)

    async with (AmiReplayServer([path], username=USER, secret=SECRET) as server,
                running(AmiConnection(pbx_for(server), sink))):
        events = await take(queue, len(expected_headers(path)))
    assert tasks_seen == {None}
    assert [dict(e.headers) for e in events] == expected_headers(path)


async def test_a_dead_peer_is_noticed_by_the_ping_deadline_and_replaced() -> None:
    # panoramisk pings but never checks for the answer.
    async with AmiReplayServer([], username=USER, secret=SECRET, answer_pings=False) as server:
        connection = AmiConnection(pbx_for(server, ping_interval=0.05, ping_timeout=0.1),
                                   lambda event: None)
        with capture_logs() as logs:
            async with running(connection):
                await asyncio.wait_for(server.wait_until(lambda: server.logins >= 2), GUARD)
                await asyncio.wait_for(connection.wait_ready(), GUARD)
        assert connection.stats.ping_timeouts >= 1
        assert connection.connects >= 2
        assert server.actions["ping"] >= 1
        events = [entry["event"] for entry in logs]
        assert "ami.ping_timeout" in events
        assert events.index("ami.ping_timeout") < events.index("ami.connection_lost")


async def test_answered_pings_keep_the_connection() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET) as server:
        connection = AmiConnection(pbx_for(server, ping_interval=0.01, ping_timeout=2.0),
                                   lambda event: None)
        async with running(connection):
            await asyncio.wait_for(server.wait_until(lambda: server.actions["ping"] >= 5), GUARD)
            assert connection.state is ConnState.READY
    assert (server.connections, connection.connects, connection.stats.ping_timeouts) == (1, 1, 0)


async def test_actions_fail_at_once_when_not_logged_in() -> None:
    # panoramisk queues them and the future never resolves.
    never_started = AmiConnection(PbxConfig(name="pbx1"), lambda event: None)
    with pytest.raises(AmiNotConnected):
        await never_started.send_action({"Action": "Ping"})
    server = AmiReplayServer([], username=USER, secret=SECRET)
    await server.start()
    connection = AmiConnection(pbx_for(server), lambda event: None)
    async with running(connection):
        await asyncio.wait_for(connection.wait_ready(), GUARD)
        await server.close()  # gone for good: every reconnect is refused
        state = await asyncio.wait_for(
            connection.wait_state(ConnState.DISCONNECTED, ConnState.CONNECTING), GUARD)
        assert state is not ConnState.READY
        with pytest.raises(AmiNotConnected):
            await connection.send_action({"Action": "Ping"})


async def test_in_flight_actions_fail_when_the_connection_drops() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET, answer_pings=False) as server:
        connection = AmiConnection(pbx_for(server), lambda event: None)
        async with running(connection):
            await asyncio.wait_for(connection.wait_ready(), GUARD)
            pending = asyncio.create_task(connection.send_action({"Action": "Ping"}, timeout=60))
            await asyncio.wait_for(server.wait_until(lambda: server.actions["ping"] == 1), GUARD)
            await server.drop_connections()
            with pytest.raises(AmiConnectionLost) as caught:
                await asyncio.wait_for(pending, GUARD)
            # It was written: lost in flight, not "never sent".
            assert not isinstance(caught.value, AmiNotSent)
            # ...and the connection comes back on its own.
            await asyncio.wait_for(server.wait_until(lambda: server.logins == 2), GUARD)
            await asyncio.wait_for(connection.wait_ready(), GUARD)
            response = await connection.send_action({"Action": "CoreShowChannels"})
            assert response["Response"] == "Success"


async def test_an_action_on_a_connection_already_lost_is_never_written() -> None:
    protocol = AmiStreamProtocol("pbx1", lambda event: None, AmiStats(), max_frame_bytes=65536,
                                 clock=lambda: 0.0)
    protocol.abort("peer_closed")
    with pytest.raises(AmiNotSent):
        protocol.send({"Action": "DongleSendSMS"})
    assert protocol.responses == {}


async def test_an_unanswered_action_times_out_and_the_connection_stays() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET, answer_pings=False) as server:
        connection = AmiConnection(pbx_for(server), lambda event: None)
        async with running(connection):
            await asyncio.wait_for(connection.wait_ready(), GUARD)
            with pytest.raises(AmiActionTimeout):
                await connection.send_action({"Action": "Ping"}, timeout=0.05)
            assert connection.state is ConnState.READY
            assert (await connection.send_action({"Action": "Bogus"}))["Response"] == "Error"
        assert server.connections == 1


async def test_list_actions_return_the_response_and_the_list() -> None:
    path = FIXTURES / "c.ami"
    async with AmiReplayServer([path], username=USER, secret=SECRET, chunk_size=64) as server:
        queue = EventQueue(1000)
        connection = AmiConnection(pbx_for(server), queue.put)
        async with running(connection):
            await asyncio.wait_for(connection.wait_ready(), GUARD)
            # sent while the transcript streams: its list events must not leak into the queue
            listing = await connection.send_list_action({"Action": "CoreShowChannels"})
            pong = await connection.send_action({"Action": "Ping"})
            events = await take(queue, len(expected_headers(path)))
            await connection.send_action({"Action": "Ping"})
            assert asterisk_events_left(queue) == []
    assert [dict(e.headers) for e in events] == expected_headers(path)
    # The items are the channels the replay had opened and not yet hung up at that point.
    assert listing[0].get("EventList") == "start"
    assert listing[-1].get("EventList") == "Complete"
    items = listing[1:-1]
    assert {m.get("Event") for m in items} <= {"CoreShowChannel"}
    assert listing[-1]["ListItems"] == str(len(items))
    assert {m["ActionID"] for m in listing} == {listing[0]["ActionID"]}
    assert set(pong) == {"Response", "ActionID", "Ping", "Timestamp"}


async def test_close_stops_for_good() -> None:
    # panoramisk reconnects after close(): its connection_lost schedules a new connect.
    async with AmiReplayServer([FIXTURES / "c.ami"], username=USER, secret=SECRET) as server:
        connection = AmiConnection(pbx_for(server), lambda event: None)
        task = asyncio.create_task(connection.run())
        await asyncio.wait_for(connection.wait_ready(), GUARD)
        await asyncio.wait_for(connection.close(), GUARD)
        await asyncio.wait_for(task, GUARD)
        assert connection.state is ConnState.CLOSED
        await asyncio.wait_for(server.wait_until(lambda: server.clients == 0), GUARD)
        # 30 times the reconnect delay: a reconnect, if any, would have come by now.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(server.wait_until(lambda: server.connections > 1), 0.3)
        assert server.connections == 1
        with pytest.raises(AmiNotConnected):
            await connection.send_action({"Action": "Ping"})
        with pytest.raises(AmiNotConnected):
            await connection.wait_ready()
        await connection.run()  # a closed connection never starts again
        assert server.connections == 1


async def test_cancelling_run_drops_the_connection() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET) as server:
        connection = AmiConnection(pbx_for(server), lambda event: None)
        task = asyncio.create_task(connection.run())
        await asyncio.wait_for(connection.wait_ready(), GUARD)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert connection.state is ConnState.CLOSED
        await asyncio.wait_for(server.wait_until(lambda: server.clients == 0), GUARD)


async def test_close_during_backoff_ends_run() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET) as server:
        pbx = pbx_for(server, reconnect_min=30.0, reconnect_max=60.0)
    connection = AmiConnection(pbx, lambda event: None)
    task = asyncio.create_task(connection.run())
    await asyncio.wait_for(connection.wait_state(ConnState.DISCONNECTED), GUARD)
    await asyncio.wait_for(connection.close(), GUARD)
    await asyncio.wait_for(task, GUARD)
    assert connection.state is ConnState.CLOSED


async def test_login_failure_is_reported_and_retried_only_in_the_slow_lane() -> None:
    # panoramisk logs nothing, stays "connected", and its actions hang.
    async with AmiReplayServer([], username=USER, secret="other") as server:
        connection = AmiConnection(
            pbx_for(server, reconnect_min=0.001, reconnect_max=0.002, login_failure_delay=0.5),
            lambda event: None)
        with capture_logs() as logs:
            async with running(connection):
                await asyncio.wait_for(connection.wait_state(ConnState.AUTH_FAILED), GUARD)
                with pytest.raises(AmiNotConnected):
                    await connection.send_action({"Action": "Ping"})
                await asyncio.wait_for(server.wait_until(lambda: server.connections >= 2), GUARD)
        gap = server.connected_at[1] - server.connected_at[0]
        assert gap >= 0.5  # not the 1 ms of the normal backoff
        assert connection.connects == 0
        assert connection.stats.login_failures >= 1
        failed = [entry for entry in logs if entry["event"] == "ami.login_failed"]
        assert failed[0]["message"] == "Authentication failed"
        assert failed[0]["log_level"] == "error"
        assert SECRET not in repr(logs)


async def test_an_oversize_frame_is_dropped_and_the_connection_reset(tmp_path: Path) -> None:
    small = [event("Small", Seq=str(n)) for n in range(3)]
    huge = event("Huge", Blob="x" * 5000)
    after = [event("After", Seq=str(n)) for n in range(3)]
    path = write_transcript(tmp_path / "huge.ami", [*small, huge, *after])
    async with AmiReplayServer([path], username=USER, secret=SECRET) as server:
        queue = EventQueue(100)
        connection = AmiConnection(pbx_for(server, max_frame_bytes=1024), queue.put)
        with capture_logs() as logs:
            async with running(connection):
                received = await take(queue, 3)
                await asyncio.wait_for(server.wait_until(lambda: server.logins >= 2), GUARD)
                await asyncio.wait_for(server.events_done.wait(), GUARD)
                await asyncio.wait_for(connection.wait_ready(), GUARD)
                # Answers follow the events on the socket: once Pong is back, all are in.
                await connection.send_action({"Action": "Ping"})
                # The frames after the huge one that were already in flight are lost with
                # the old connection; any that arrive are whole and in order.
                received += asterisk_events_left(queue)
    assert [e.get("Seq") for e in received[:3]] == ["0", "1", "2"]
    assert [e.name for e in received[3:]] == ["After"] * (len(received) - 3)
    assert [e.get("Seq") for e in received[3:]] == ["0", "1", "2"][3 - (len(received) - 3):]
    assert connection.stats.frames_too_large == 1
    assert any(entry["event"] == "ami.frame_too_large" for entry in logs)


async def test_reconnect_mid_stream_delivers_every_frame_once_in_order() -> None:
    path = FIXTURES / "a.ami"
    expected = expected_headers(path)
    async with AmiReplayServer([path], username=USER, secret=SECRET,
                               drop_after_frames=40) as server:
        queue = EventQueue(1000)
        connection = AmiConnection(pbx_for(server), queue.put)
        async with running(connection):
            events = await take(queue, len(expected))
            await asyncio.wait_for(server.events_done.wait(), GUARD)
            assert asterisk_events_left(queue) == []
    assert [dict(e.headers) for e in events] == expected
    sessions = -(-len(expected) // 40)
    assert (connection.connects, server.logins) == (sessions, sessions)
    assert connection.stats.reconnects == sessions - 1


async def test_shutdown_from_asterisk_counts_as_connection_lost(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "shutdown.ami", [
        event("FullyBooted"), event("Shutdown", Shutdown="Uncleanly", Restart="True")])
    async with AmiReplayServer([path], username=USER, secret=SECRET) as server:
        queue = EventQueue(100)
        connection = AmiConnection(pbx_for(server), queue.put)
        with capture_logs() as logs:
            async with running(connection):
                names = [e.name for e in await take(queue, 2)]
                await asyncio.wait_for(server.wait_until(lambda: server.logins >= 2), GUARD)
    assert names == ["FullyBooted", "Shutdown"]
    assert connection.connects >= 2
    lost = [entry for entry in logs if entry["event"] == "ami.connection_lost"]
    assert lost[0]["reason"] == "peer_shutdown"


async def test_any_asterisk_manager_version_is_accepted() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET,
                               banner=b"Asterisk Call Manager/9.0.0") as server:
        connection = AmiConnection(pbx_for(server), lambda event: None)
        async with running(connection):
            await asyncio.wait_for(connection.wait_ready(), GUARD)
    assert connection.banner == "Asterisk Call Manager/9.0.0"


async def test_a_server_that_is_not_asterisk_is_refused() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET,
                               banner=b"SSH-2.0-OpenSSH_9.6") as server:
        connection = AmiConnection(pbx_for(server), lambda event: None)
        with capture_logs() as logs:
            async with running(connection):
                await asyncio.wait_for(server.wait_until(lambda: server.connections >= 2), GUARD)
                assert connection.state is not ConnState.READY
    assert (server.logins, server.actions["login"], connection.connects) == (0, 0, 0)
    bad = [entry for entry in logs if entry["event"] == "ami.bad_banner"]
    assert bad[0]["line"] == "SSH-2.0-OpenSSH_9.6"


async def test_a_full_queue_drops_new_events_and_says_so_once() -> None:
    path = FIXTURES / "a.ami"
    expected = expected_headers(path)
    queue = EventQueue(10, clock=lambda: 100.0, log_interval=5.0)
    all_seen = asyncio.Event()
    seen = itertools.count(1)

    def sink(event: AmiEvent) -> None:
        if event.name.startswith("@"):
            return  # the client's own connection events; this test is about Asterisk's
        queue.put(event)
        if next(seen) == len(expected):
            all_seen.set()

    async with AmiReplayServer([path], username=USER, secret=SECRET) as server:
        connection = AmiConnection(pbx_for(server), sink)
        with capture_logs() as logs:
            async with running(connection):
                await asyncio.wait_for(all_seen.wait(), GUARD)
                assert connection.state is ConnState.READY
    assert queue.qsize() == 10
    assert queue.dropped == len(expected) - 10
    assert [dict(e.headers) for e in await take(queue, 10)] == expected[:10]
    full = [entry for entry in logs if entry["event"] == "ami.queue_full"]
    assert len(full) == 1  # the clock never moved: one line for the whole burst
    assert (full[0]["log_level"], full[0]["dropped"], full[0]["maxsize"]) == ("error", 1, 10)


async def test_queue_full_log_is_rate_limited_and_counts_what_it_skipped() -> None:
    now = [0.0]
    queue = EventQueue(1, clock=lambda: now[0], log_interval=5.0)
    sample = AmiEvent("pbx1", "Newchannel", {}, 0.0)
    with capture_logs() as logs:
        for second in range(12):
            now[0] = float(second)
            queue.put(sample)
    full = [entry for entry in logs if entry["event"] == "ami.queue_full"]
    # drops at seconds 1..11; logged at 1, 6 and 11, each with the drops since the last line
    assert [(e["dropped"], e["dropped_total"]) for e in full] == [(1, 1), (5, 6), (5, 11)]
    assert queue.dropped == 11
    with pytest.raises(ValueError, match="bounded"):
        EventQueue(0)


async def test_a_drop_is_a_gap_marked_in_the_stream_once_there_is_room() -> None:
    gaps: list[str] = []
    queue = EventQueue(3, on_gap=gaps.append)
    events = [AmiEvent("pbx1", "Newchannel", {"Uniqueid": str(n)}, float(n)) for n in range(6)]
    with capture_logs():
        for event in events[:4]:
            queue.put(event)  # e3 is dropped: no room, not even for the mark
        assert (queue.dropped, gaps) == (1, [])
        taken = [queue.get_nowait()]  # room again: the mark goes in at once
        assert gaps == ["pbx1"]
        queue.put(events[4])  # full again: dropped, a second gap
        taken += [queue.get_nowait() for _ in range(4)]
        queue.put(events[5])
        taken.append(queue.get_nowait())
    mark = ("pbx1", DISCONNECTED_EVENT, {"Reason": "queue_full"})
    assert [(e.pbx, e.name, dict(e.headers)) for e in taken] == [
        ("pbx1", "Newchannel", {"Uniqueid": "0"}), ("pbx1", "Newchannel", {"Uniqueid": "1"}),
        ("pbx1", "Newchannel", {"Uniqueid": "2"}), mark, mark,
        ("pbx1", "Newchannel", {"Uniqueid": "5"}),
    ]
    assert (gaps, queue.dropped, queue.qsize()) == (["pbx1", "pbx1"], 2, 0)


async def test_a_getter_cancelled_as_it_is_woken_leaves_the_event_to_the_next() -> None:
    queue = EventQueue(10)
    first, second = asyncio.create_task(queue.get()), asyncio.create_task(queue.get())
    await asyncio.sleep(0)  # both start waiting, the first in front
    event = AmiEvent("pbx1", "Newchannel", {}, 0.0)
    queue.put(event)  # wakes the first...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, GUARD) is event
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    waiting.cancel()  # cancelled while waiting: takes nothing
    with pytest.raises(asyncio.CancelledError):
        await waiting
    queue.put(event)
    assert (queue.qsize(), await queue.get()) == (1, event)


async def test_several_pbxs_feed_one_queue() -> None:
    paths = {"pbx1": FIXTURES / "a.ami", "pbx2": FIXTURES / "c.ami"}
    queue = EventQueue(10_000)
    async with contextlib.AsyncExitStack() as stack:
        for name, path in paths.items():
            server = await stack.enter_async_context(
                AmiReplayServer([path], username=USER, secret=SECRET, chunk_size=512))
            await stack.enter_async_context(running(
                AmiConnection(pbx_for(server, name=name), queue.put)))
        total = sum(len(expected_headers(p)) for p in paths.values())
        events = await take(queue, total)
    for name, path in paths.items():
        assert [dict(e.headers) for e in events if e.pbx == name] == expected_headers(path)


def test_backoff_grows_from_the_first_delay_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(30.0, 0.1 * 2 ** (attempt + 1))
        delays = [backoff_delay(attempt, 0.1, 30.0, rng) for _ in range(50)]
        assert all(max(0.1, ceiling / 2) <= d <= ceiling for d in delays), attempt
        assert len(set(delays)) > 1  # jittered, so many clients do not retry in step
    assert backoff_delay(0, 0.1, 30.0, rng) <= 0.2  # fast first retry
    assert backoff_delay(1000, 0.1, 30.0, rng) <= 30.0  # no overflow, capped


async def test_wait_ready_ends_when_the_connection_is_closed_first() -> None:
    connection = AmiConnection(PbxConfig(name="pbx1", port=1), lambda event: None)
    waiter = asyncio.create_task(connection.wait_ready())
    await connection.close()
    with pytest.raises(AmiNotConnected):
        await asyncio.wait_for(waiter, GUARD)



async def test_a_peer_cannot_forge_the_clients_own_connection_events(tmp_path: Path) -> None:
    forged = [event("@Channels", Linkedids=""), event("@Disconnected"), event("After")]
    path = write_transcript(tmp_path / "forged.ami", forged)
    async with AmiReplayServer([path], username=USER, secret=SECRET) as server:
        queue = EventQueue(100)
        connection = AmiConnection(pbx_for(server), queue.put)
        async with running(connection):
            (after,) = await take(queue, 1)
            await asyncio.wait_for(server.events_done.wait(), GUARD)
            await connection.send_action({"Action": "Ping"})
            left = [queue.get_nowait() for _ in range(queue.qsize())]
    assert after.name == "After"
    # Only the client's own @Channels (after its login) may be there, with its real list.
    assert all(e.name == "@Channels" and e.get("Linkedids") == "" for e in left)
    assert connection.stats.dropped_frames == 2
