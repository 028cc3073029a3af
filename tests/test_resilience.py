"""AMI drops and lost events: every call texted once; calls that ended in a gap finalised."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from structlog.testing import capture_logs

from hangupsms.ami import AmiConnection, EventQueue
from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.cdrlab import CdrWriter, lab_variable_columns
from hangupsms.config import PbxConfig
from hangupsms.daemon import Daemon
from hangupsms.frames import event_frames
from hangupsms.models import CHANNELS_EVENT, DISCONNECTED_EVENT, AmiEvent, CompletedCall, EndReason
from hangupsms.replay import AmiReplayServer
from tests.lab import (
    SECRET,
    TRANSCRIPTS,
    USER,
    expected_linkedids,
    expected_sent,
    fake_twilio,
    lab_config,
    planned_sends,
    running_daemon,
)
from tests.test_calls import BY_NAME, assert_facts, load

SETTINGS = TrackerSettings.from_pbx(PbxConfig(name="lab"))


def _link_event(name: str, **headers: str) -> AmiEvent:
    return AmiEvent("lab", name, headers, 0.0)


def _feed(tracker: CallTracker, events: list[AmiEvent]) -> list[CompletedCall]:
    return [call for event in events for call in tracker.feed(event, 0.0)]


def test_a_call_gone_after_a_reconnect_is_finalised_from_what_was_seen() -> None:
    events = load("c")
    tracker = CallTracker("lab", SETTINGS)
    assert _feed(tracker, events[:20]) == []
    calls = _feed(tracker, [_link_event(DISCONNECTED_EVENT),
                            _link_event(CHANNELS_EVENT, Linkedids="")])
    assert [(c.linkedid, c.end_reason) for c in calls] == [("1796413091.27", EndReason.GAP)]
    assert calls[0].customer_number == "+33612345678" and calls[0].did == "4002"
    # The rest of the call's events (if Asterisk still sent any) start nothing new.
    assert _feed(tracker, events[20:]) + tracker.expire(float("inf")) == []


def test_a_call_still_live_after_a_reconnect_goes_on_to_its_normal_end() -> None:
    events = load("a")
    tracker = CallTracker("lab", SETTINGS)
    assert _feed(tracker, events[:60]) == []
    assert _feed(tracker, [_link_event(DISCONNECTED_EVENT),
                           _link_event(CHANNELS_EVENT, Linkedids="1796413068.0 9.9")]) == []
    calls = _feed(tracker, events[60:]) + tracker.expire(float("inf"))
    assert len(calls) == 1
    assert_facts(calls[0], BY_NAME["a"])


def test_calls_started_after_the_drop_are_not_touched_by_the_channel_list() -> None:
    tracker = CallTracker("lab", SETTINGS)
    assert _feed(tracker, [_link_event(DISCONNECTED_EVENT)]) == []
    events = load("b")
    calls = _feed(tracker, [*events[:30], _link_event(CHANNELS_EVENT, Linkedids="")])
    assert calls == []
    calls = _feed(tracker, events[30:]) + tracker.expire(float("inf"))
    assert_facts(calls[0], BY_NAME["b"])


async def test_events_lost_during_drops_never_yield_a_call_twice() -> None:
    """Each drop loses the next 15 events, as Asterisk sends them to nobody."""
    total = sum(1 for path in TRANSCRIPTS for _ in event_frames(path))
    queue = EventQueue(10_000)
    async with AmiReplayServer(TRANSCRIPTS, username=USER, secret=SECRET,
                               drop_after_frames=60, lose_after_drop=15) as server:
        pbx = PbxConfig(name="lab", port=server.port, username=USER, secret=SECRET,
                        reconnect_min=0.01, reconnect_max=0.05)
        connection = AmiConnection(pbx, queue.put)
        runner = asyncio.create_task(connection.run())
        tracker = CallTracker("lab", TrackerSettings.from_pbx(pbx))
        calls: list[CompletedCall] = []
        try:
            async with asyncio.timeout(30):
                await server.wait_until(lambda: server.cursor == total)
                await server.events_done.wait()
                await connection.wait_ready()
                # The answer to a Ping follows every event already sent on this connection.
                await connection.send_action({"Action": "Ping"})
                while queue.qsize():
                    calls += tracker.feed(queue.get_nowait(), 0.0)
        finally:
            await connection.close()
            await runner
    calls += tracker.expire(float("inf"))
    assert server.lost_frames > 0
    linkedids = Counter(call.linkedid for call in calls)
    assert max(linkedids.values()) == 1
    assert set(linkedids) <= expected_linkedids()
    complete = [c for c in calls if c.end_reason is EndReason.LINKEDID_END]
    assert complete, "some calls must have had all their events delivered"


_FAST_RECONNECT = {"reconnect_min": 0.05, "reconnect_max": 0.5}


async def test_twenty_drops_during_a_replay_text_every_call_once(tmp_path: Path) -> None:
    async with fake_twilio() as twilio, AmiReplayServer(
        TRANSCRIPTS, username=USER, secret=SECRET, drop_after_frames=55
    ) as server:
        config = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url,
                            pbx=_FAST_RECONNECT, twilio={"rate": 100})
        with capture_logs() as logs:
            async with running_daemon(config) as daemon, asyncio.timeout(60):
                await server.events_done.wait()
                await daemon.wait_drained()
    assert server.connections >= 21  # 20 drops at least
    assert Counter((m.to, m.body) for m in twilio.accepted) == expected_sent()
    lost = [e for e in logs if e["event"] == "ami.reconnect_scheduled" and e["after"] == "lost"]
    assert len(lost) >= 20
    # After a working session the first retry is fast: well within a second.
    assert max(e["delay"] for e in lost) < 1.0


async def test_with_a_cdr_database_calls_whose_events_were_lost_are_texted_too(
    tmp_path: Path,
) -> None:
    """Twenty drops or more, each losing the next 15 events; the CDR file fills the gaps.

    Calls cut by a gap are completed from their CDR rows, calls that happened wholly in one
    are rebuilt from them: every call is texted, once, as if nothing had been lost. The
    agents directory names agent1 as the queue did (a CDR does not carry MemberName).
    """
    writer = CdrWriter(tmp_path / "cdr.db")
    transcripts = [p for p in TRANSCRIPTS if p.stem != "a_readonly"]  # a, by another user
    async with fake_twilio() as twilio, AmiReplayServer(
        transcripts, username=USER, secret=SECRET, drop_after_frames=35, lose_after_drop=15,
        cdr=writer, list_before_drop=True,
    ) as server:
        config = lab_config(
            tmp_path, ami_port=server.port, twilio_url=twilio.url, twilio={"rate": 100},
            pbx={**_FAST_RECONNECT, "cdr": {"sqlite": str(tmp_path / "cdr.db"),
                                            "variables": lab_variable_columns()}},
            extra={"agents": {"agent1": {"name": "Agent One"}}})
        with capture_logs() as logs:
            async with running_daemon(config) as daemon, asyncio.timeout(60):
                await server.events_done.wait()
                await daemon.wait_until(_all_recorded(daemon, len(transcripts)))
                await daemon.wait_drained()
    assert server.connections >= 21 and server.lost_frames >= 20 * 15
    frames = [f for path in transcripts for f in event_frames(path)]
    assert Counter((m.to, m.body) for m in twilio.accepted) == planned_sends(config, frames)
    reasons = Counter(e["end"] for e in logs if e["event"] == "call.completed")
    assert reasons["from_cdr"] >= 1 and reasons["ended_while_disconnected"] >= 1, reasons
    assert sum(reasons.values()) == len(transcripts)


async def test_a_full_event_queue_is_a_gap_closed_like_a_reconnect(tmp_path: Path) -> None:
    """A queue of 40 events against a reader that hands over whole TCP reads: most events
    are dropped. Each drop is marked in the stream, a channel list follows, and the CDR
    file completes what was cut: every call is texted once, as an unbroken stream would."""
    writer = CdrWriter(tmp_path / "cdr.db")
    transcripts = [p for p in TRANSCRIPTS if p.stem != "a_readonly"]
    async with fake_twilio() as twilio, AmiReplayServer(
        transcripts, username=USER, secret=SECRET, cdr=writer,
    ) as server:
        config = lab_config(
            tmp_path, ami_port=server.port, twilio_url=twilio.url, twilio={"rate": 100},
            pbx={"cdr": {"sqlite": str(tmp_path / "cdr.db"), "variables": lab_variable_columns()}},
            extra={"agents": {"agent1": {"name": "Agent One"}}})
        with capture_logs() as logs:
            async with running_daemon(config, queue_size=40) as daemon, asyncio.timeout(60):
                await server.events_done.wait()
                await daemon.wait_until(_all_recorded(daemon, len(transcripts)))
                await daemon.wait_drained()
                dropped = daemon.queue.dropped
    assert dropped > 100 and server.connections == 1
    frames = [f for path in transcripts for f in event_frames(path)]
    assert Counter((m.to, m.body) for m in twilio.accepted) == planned_sends(config, frames)
    assert [e for e in logs if e["event"] == "ami.queue_gap_marked"]


async def test_a_stalled_provider_holds_up_no_call_and_the_backlog_drains_in_order(
    tmp_path: Path,
) -> None:
    """The provider answers nothing while every call of the replay ends, then recovers."""
    async with fake_twilio() as twilio, AmiReplayServer(
        TRANSCRIPTS, username=USER, secret=SECRET
    ) as server:
        twilio.stall()
        # The stall must not time out: a timeout would make the message ambiguous.
        config = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url,
                            pbx=_FAST_RECONNECT, twilio={"rate": 100, "timeout": 600})
        async with running_daemon(config) as daemon, asyncio.timeout(60):
            await server.events_done.wait()
            await daemon.wait_until(_all_recorded(daemon, len(expected_linkedids())))
            async with twilio.arrived:
                await twilio.arrived.wait_for(lambda: twilio.stalled == 1)
            # Every call ended and was recorded while the provider hung.
            (connection,) = daemon.connections
            assert (connection.connects, connection.state.value) == (1, "ready")
            assert daemon.queue.dropped == 0 and daemon.queue.qsize() == 0
            assert daemon.pipeline is not None and daemon.pipeline.live_calls() == 0
            assert twilio.accepted == []
            twilio.resume()
            await daemon.wait_drained()
    assert len(twilio.accepted) == sum(expected_sent().values())
    with sqlite3.connect(tmp_path / "h.db") as db:
        sent_order = [row[0] for row in db.execute(
            "SELECT provider_id FROM messages WHERE state = 'sent' ORDER BY id")]
    assert sent_order == [m.sid for m in twilio.accepted]  # the backlog went out in order


def _all_recorded(daemon: Daemon, calls: int) -> Callable[[], Awaitable[bool]]:
    async def recorded() -> bool:
        return daemon.pipeline is not None and daemon.pipeline.calls_recorded >= calls
    return recorded
