"""The fake AMI server, driven by a raw asyncio client (no panoramisk) on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hangupsms.frames import decode_frame, event_frames, read_transcript
from hangupsms.replay import AmiReplayServer, load_transcript, serve_transcripts

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
USER, SECRET = "hangupsms", "s3cret"
GUARD = 5.0  # seconds; only ever reached when something is broken


def recorded_events(path: Path) -> list[bytes]:
    return [raw for raw in read_transcript(path)[1] if decode_frame(raw).first("Event")]


class RawClient:
    """Just enough of an AMI client to talk to the server byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: AmiReplayServer) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def banner(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n"), GUARD)

    async def send(self, **headers: str) -> None:
        text = "".join(f"{key}: {value}\r\n" for key, value in headers.items()) + "\r\n"
        self.writer.write(text.encode())
        await self.writer.drain()

    async def raw_frame(self) -> bytes:
        data = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), GUARD)
        return data[:-4]

    async def frame(self) -> dict[str, str]:
        return decode_frame(await self.raw_frame()).as_dict()

    async def login(self, secret: str = SECRET) -> dict[str, str]:
        await self.banner()
        await self.send(Action="Login", Username=USER, Secret=secret, ActionID="login-1")
        return await self.frame()

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), GUARD) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def a_server() -> AsyncIterator[AmiReplayServer]:
    async with AmiReplayServer([FIXTURES / "a.ami"], username=USER, secret=SECRET) as server:
        yield server


async def test_banner_login_then_recorded_event_frames_byte_for_byte(
        a_server: AmiReplayServer) -> None:
    client = await RawClient.connect(a_server)
    assert await client.banner() == b"Asterisk Call Manager/11.0.0\r\n"
    await client.send(Action="Login", Username=USER, Secret=SECRET, ActionID="x-1")
    assert await client.frame() == {"Response": "Success", "ActionID": "x-1",
                                    "Message": "Authentication accepted"}
    expected = recorded_events(FIXTURES / "a.ami")
    received = [await client.raw_frame() for _ in expected]
    assert received == expected
    assert not any(raw.startswith(b"Response:") for raw in received)
    await asyncio.wait_for(a_server.events_done.wait(), GUARD)
    assert (a_server.connections, a_server.logins, a_server.cursor) == (1, 1, len(expected))
    await client.close()


async def test_wrong_secret_is_refused_and_the_connection_closed(
        a_server: AmiReplayServer) -> None:
    client = await RawClient.connect(a_server)
    response = await client.login(secret="wrong")
    assert response == {"Response": "Error", "ActionID": "login-1",
                        "Message": "Authentication failed"}
    assert await client.at_eof()
    assert (a_server.logins, a_server.login_failures, a_server.cursor) == (0, 1, 0)
    await client.close()


async def test_actions_before_login_need_authentication(a_server: AmiReplayServer) -> None:
    client = await RawClient.connect(a_server)
    await client.banner()
    await client.send(Action="Ping", ActionID="early")
    assert await client.frame() == {"Response": "Error", "ActionID": "early",
                                    "Message": "Authentication Required"}
    assert a_server.cursor == 0
    await client.close()


async def test_write_classes_deny_actions_and_shape_list_commands() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET,
                               write_classes=frozenset({"originate"})) as server:
        client = await RawClient.connect(server)
        assert (await client.login())["Response"] == "Success"
        await client.send(Action="CoreShowChannels", ActionID="c-1")
        assert await client.frame() == {"Response": "Error", "ActionID": "c-1",
                                        "Message": "Permission denied"}
        await client.send(Action="ListCommands", ActionID="l-1")
        listed = await client.frame()
        assert listed["Originate"] == "Originate a call. (Priv: originate,all)"
        assert listed["Ping"] == "Keepalive command. (Priv: <none>)"
        assert "CoreSettings" not in listed and "Command" not in listed
        await client.close()


async def test_actions_are_answered_with_their_action_id() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET) as server:
        client = await RawClient.connect(server)
        assert (await client.login())["Response"] == "Success"
        await client.send(Action="Ping", ActionID="p-1")
        pong = await client.frame()
        assert (pong["Response"], pong["ActionID"], pong["Ping"]) == ("Success", "p-1", "Pong")
        assert float(pong["Timestamp"]) > 0
        await client.send(Action="Events", EventMask="on", ActionID="e-1")
        assert await client.frame() == {"Response": "Success", "ActionID": "e-1", "Events": "On"}
        await client.send(Action="CoreShowChannels", ActionID="c-1")
        assert await client.frame() == {"Response": "Success", "ActionID": "c-1",
                                        "Message": "Channels will follow", "EventList": "start"}
        assert await client.frame() == {"Event": "CoreShowChannelsComplete", "ActionID": "c-1",
                                        "EventList": "Complete", "ListItems": "0"}
        await client.send(Action="Originate", ActionID="o-1")
        assert await client.frame() == {"Response": "Error", "ActionID": "o-1",
                                        "Message": "Invalid/unknown command"}
        await client.send(Action="Logoff", ActionID="l-1")
        assert (await client.frame())["Response"] == "Goodbye"
        assert await client.at_eof()
        await client.close()
        assert server.actions["ping"] == 1
        assert server.events_done.is_set()  # nothing to replay


async def test_a_dead_peer_keeps_the_socket_open_but_never_answers_pings() -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET, answer_pings=False) as server:
        client = await RawClient.connect(server)
        await client.login()
        await client.send(Action="Ping", ActionID="p-1")
        await client.send(Action="Nonsense", ActionID="n-1")
        # Answers come in order: the first frame answering the second action proves the
        # Ping got none.
        assert (await client.frame())["ActionID"] == "n-1"
        assert server.actions["ping"] == 1
        assert server.clients == 1
        await client.close()


async def test_drop_after_frames_closes_and_the_next_connection_resumes() -> None:
    path = FIXTURES / "c.ami"
    expected = recorded_events(path)
    async with AmiReplayServer([path], username=USER, secret=SECRET,
                               drop_after_frames=30) as server:
        received: list[bytes] = []
        for batch in (30, 30, len(expected) - 60):
            client = await RawClient.connect(server)
            await client.login()
            received += [await client.raw_frame() for _ in range(batch)]
            if batch == 30:
                assert await client.at_eof()
            await client.close()
        assert received == expected
        assert server.connections == 3
        await asyncio.wait_for(server.events_done.wait(), GUARD)


async def test_transcripts_are_concatenated_in_the_order_given() -> None:
    paths = [FIXTURES / "c.ami", FIXTURES / "f.ami"]
    async with AmiReplayServer(paths, username=USER, secret=SECRET, chunk_size=7) as server:
        expected = recorded_events(paths[0]) + recorded_events(paths[1])
        client = await RawClient.connect(server)
        await client.login()
        assert [await client.raw_frame() for _ in expected] == expected
        await client.close()


async def test_transcript_spacing_follows_the_timing_file() -> None:
    path = FIXTURES / "a.ami"
    frames = load_transcript(path)
    assert [decode_frame(f.raw).as_dict() for f in frames] == [
        f.as_dict() for f in event_frames(path)]
    reads = [json.loads(line) for line in path.with_name("a.ami.timing").read_text().splitlines()]
    assert frames[0].delay == 0.0
    assert all(f.delay >= 0 for f in frames)
    # The recording's pauses (Originate, ringing, talking) survive: some gaps are long...
    assert max(f.delay for f in frames) >= 0.25
    # ...and the spacing adds up to no more than the recording lasted.
    assert 0.5 < sum(f.delay for f in frames) <= reads[-1]["t"]


async def test_transcript_without_timing_file_has_no_pauses(tmp_path: Path) -> None:
    path = tmp_path / "bare.ami"
    path.write_bytes(b"Asterisk Call Manager/11.0.0\r\nEvent: One\r\n\r\nEvent: Two\r\n\r\n")
    assert [(f.raw, f.delay) for f in load_transcript(path)] == [
        (b"Event: One", 0.0), (b"Event: Two", 0.0)]


async def test_paced_replay_still_sends_every_frame() -> None:
    path = FIXTURES / "c.ami"
    async with AmiReplayServer([path], username=USER, secret=SECRET, pace=0.01) as server:
        client = await RawClient.connect(server)
        await client.login()
        expected = recorded_events(path)
        assert [await client.raw_frame() for _ in expected] == expected
        await client.close()


async def test_client_vanishing_mid_write_does_not_crash_the_server() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    path = FIXTURES / "c.ami"
    try:
        async with AmiReplayServer([path], username=USER, secret=SECRET,
                                   chunk_size=1) as server:
            first = await RawClient.connect(server)
            await first.login()
            await asyncio.wait_for(first.reader.readexactly(100), GUARD)
            first.writer.transport.abort()  # gone in the middle of a frame
            await asyncio.wait_for(server.wait_until(lambda: server.clients == 0), GUARD)
            resume = server.cursor
            second = await RawClient.connect(server)
            await second.login()
            expected = recorded_events(path)
            # The frame cut short is sent again in full: resume at the first unfinished one.
            assert [await second.raw_frame() for _ in expected[resume:]] == expected[resume:]
            await asyncio.wait_for(server.events_done.wait(), GUARD)
            await second.close()
    finally:
        loop.set_exception_handler(None)
    assert errors == []


async def test_drop_connections_ends_every_client(a_server: AmiReplayServer) -> None:
    client = await RawClient.connect(a_server)
    await client.banner()
    await a_server.drop_connections()
    assert await client.at_eof()
    assert a_server.clients == 0
    await client.close()


async def test_serve_transcripts_returns_a_listening_server() -> None:
    server = await serve_transcripts([FIXTURES / "b.ami"], username=USER, secret=SECRET)
    try:
        assert server.port > 0
        assert len(server.frames) == len(recorded_events(FIXTURES / "b.ami"))
        client = await RawClient.connect(server)
        assert (await client.login())["Response"] == "Success"
        await client.close()
    finally:
        await server.close()
