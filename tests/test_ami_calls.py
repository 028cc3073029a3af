"""Every transcript through the real AMI client into the tracker: the answer key's facts.

The fake AMI server replays the recorded bytes on 127.0.0.1, whole, cut into 7-byte TCP
writes, or dropping the connection every 40 event frames (the client reconnects and the
server resumes from the next frame).
"""

from __future__ import annotations

import asyncio

import pytest

from hangupsms.ami import AmiConnection, EventQueue
from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.config import PbxConfig
from hangupsms.frames import event_frames
from hangupsms.models import CompletedCall
from hangupsms.replay import AmiReplayServer
from tests.test_calls import BY_NAME, FIXTURES, NAMES, assert_facts

USER, SECRET = "hangupsms", "labsecret"
MODES: dict[str, dict[str, int]] = {
    "whole": {},
    "7-byte-writes": {"chunk_size": 7},
    "dropped-every-40-frames": {"drop_after_frames": 40},
}


async def _calls_through_the_client(name: str, options: dict[str, int]) -> tuple[
    list[CompletedCall], AmiReplayServer, AmiConnection
]:
    path = FIXTURES / f"{name}.ami"
    expected_events = sum(1 for _ in event_frames(path))
    queue = EventQueue(10_000)
    async with AmiReplayServer(
        [path], username=USER, secret=SECRET, chunk_size=options.get("chunk_size"),
        drop_after_frames=options.get("drop_after_frames"),
    ) as server:
        pbx = PbxConfig(name="lab", port=server.port, username=USER, secret=SECRET,
                        reconnect_min=0.01, reconnect_max=0.05)
        connection = AmiConnection(pbx, queue.put)
        runner = asyncio.create_task(connection.run())
        tracker = CallTracker("lab", TrackerSettings.from_pbx(pbx))
        calls: list[CompletedCall] = []
        try:
            async with asyncio.timeout(30):
                seen = 0
                while seen < expected_events:
                    # All at one instant: the grace periods are the tracker's business,
                    # tested on their own; here the bytes and the reconnects are. The
                    # client's own `@` events (link lost, calls still live) go in too.
                    event = await queue.get()
                    seen += not event.name.startswith("@")
                    calls += tracker.feed(event, 0.0)
        finally:
            await connection.close()
            await runner
    calls += tracker.expire(float("inf"))
    assert queue.dropped == 0
    return calls, server, connection


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", NAMES)
async def test_transcript_through_the_client_yields_the_key_facts(name: str, mode: str) -> None:
    calls, server, connection = await _calls_through_the_client(name, MODES[mode])
    (call,) = calls
    assert_facts(call, BY_NAME[name])
    if mode == "dropped-every-40-frames":
        # Every transcript has more than 40 events: at least one drop and one reconnect.
        assert server.connections >= 2
        assert connection.connects == server.connections

