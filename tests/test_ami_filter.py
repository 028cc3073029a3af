"""The event fast path: events no call needs skipped before decoding, the rest in one pass.

The judgement reads two things from the raw bytes (frames.peek_event_name / peek_header),
and the others are decoded by frames.decode_headers: all must agree with the full decoder.
The tracker says what is wanted; the connection skips only when no action waits for its
answer; the daemon turns it on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hangupsms.ami import AmiConnection, EventQueue
from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.frames import (
    Frame,
    decode_frame,
    decode_headers,
    event_frames,
    peek_event_name,
    peek_header,
)
from hangupsms.models import TAG_EVENT, AmiEvent
from hangupsms.replay import AmiReplayServer
from tests import lab
from tests.lab import TRANSCRIPTS, fake_twilio, lab_config, running_daemon
from tests.test_ami import (
    GUARD,
    SECRET,
    USER,
    asterisk_events_left,
    pbx_for,
    running,
    take,
    write_transcript,
)

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=300)
TRACKER = CallTracker("pbx1", TrackerSettings(inbound_contexts=(), internal_contexts=()))

NAMES = st.text("ActionIDEventVarblCh-_()0123456789 \t", min_size=1, max_size=12)
VALUES = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))
LINES = st.one_of(
    st.builds(lambda n, v: n.encode() + b":" + v, NAMES, VALUES),
    VALUES.map(lambda b: b.replace(b":", b"")),  # no colon: a malformed line
    st.sampled_from([b"Event: VarSet", b"Event:  Hangup \r", b"Event:", b"Event: \xe2\x82",
                     b"Variable: HANGUPSMS_X", b"Variable:DIALSTATUS", b"\xff\xfeEvent: X",
                     b"ChanVariable: HANGUPSMS_X=1", b"ChanVariable: NOEQ", b" : x", b"\r",
                     b"DestChanVariable :A=b=c", b"ChanVariable(A): first", b"\x00:\x85"]),
)


@st.composite
def raw_frames(draw: st.DrawFn) -> bytes:
    ending = draw(st.sampled_from([b"\r\n", b"\n"]))
    return ending.join(draw(st.lists(LINES, min_size=1, max_size=6))).strip(b"\r\n") or b"x"


def wanted_by_tracker(frame: Frame) -> bool:
    headers = frame.as_dict()
    return TRACKER.wants(headers.get("Event", ""), headers.get)


# --- the raw-bytes reading agrees with the decoder -----------------------------------------

@given(raw=raw_frames())
@PROPERTY
def test_the_peeked_event_name_is_the_one_the_decoder_reads(raw: bytes) -> None:
    name = peek_event_name(raw)
    if raw.startswith(b"Event:"):
        assert name == decode_frame(raw).first("Event")
    else:
        assert name is None


@given(raw=raw_frames())
@PROPERTY
def test_the_one_pass_decoder_gives_the_headers_and_drops_of_the_frame_decoder(
    raw: bytes
) -> None:
    frame = decode_frame(raw)
    assert decode_headers(raw) == (frame.as_dict(), frame.malformed_lines)


@given(lines=st.lists(st.tuples(st.sampled_from(["Event", "Variable", "Value", "Linkedid"]),
                                VALUES), min_size=1, max_size=6),
       ending=st.sampled_from([b"\r\n", b"\n"]))
@PROPERTY
def test_a_peeked_header_has_the_value_the_decoder_gives_it(
    lines: list[tuple[str, bytes]], ending: bytes
) -> None:
    raw = ending.join(name.encode() + b": " + value for name, value in lines)
    headers = decode_frame(raw).as_dict()
    for name in ("Event", "Variable", "Value", "Linkedid", "Missing"):
        assert peek_header(raw, name) == headers.get(name)


def test_the_tracker_wants_routed_events_and_only_its_own_variables() -> None:
    varset = {"Variable": "HANGUPSMS_ORDER"}.get
    assert TRACKER.wants("Hangup") and TRACKER.wants("Cdr") and TRACKER.wants(TAG_EVENT)
    assert TRACKER.wants("VarSet", varset)
    assert not TRACKER.wants("VarSet", {"Variable": "DIALSTATUS"}.get)
    assert not TRACKER.wants("VarSet")  # no Variable header: nothing to take in
    assert not TRACKER.wants("Newexten") and not TRACKER.wants("hangup")


# --- the connection ----------------------------------------------------------------------

def refuse_all(name: str, header: object) -> bool:
    return False


async def test_a_filtered_connection_hands_over_exactly_the_wanted_events_in_order() -> None:
    path = TRANSCRIPTS[0]
    frames = list(event_frames(path))
    kept = [frame.as_dict() for frame in frames if wanted_by_tracker(frame)]
    assert 0 < len(kept) < len(frames)
    async with AmiReplayServer([path], username=USER, secret=SECRET, chunk_size=997) as server:
        queue = EventQueue(10_000)
        connection = AmiConnection(pbx_for(server), queue.put, wanted=TRACKER.wants)
        async with running(connection):
            await asyncio.wait_for(server.events_done.wait(), GUARD)
            await connection.send_action({"Action": "Ping"})  # everything sent has been read
            delivered = asterisk_events_left(queue)
    # The login's channel list was pending meanwhile: frames without its ActionID were
    # still judged, and skipped.
    assert [dict(e.headers) for e in delivered] == kept
    assert connection.stats.skipped_events == len(frames) - len(kept)


async def test_answers_and_list_events_pass_a_filter_that_refuses_every_event() -> None:
    path = TRANSCRIPTS[0]
    async with AmiReplayServer([path], username=USER, secret=SECRET, chunk_size=64) as server:
        queue = EventQueue(10_000)
        connection = AmiConnection(pbx_for(server), queue.put, wanted=refuse_all)
        async with running(connection):
            await asyncio.wait_for(connection.wait_ready(), GUARD)
            listing = await connection.send_list_action({"Action": "CoreShowChannels"})
            pong = await connection.send_action({"Action": "Ping"})
            await asyncio.wait_for(server.events_done.wait(), GUARD)
            await connection.send_action({"Action": "Ping"})
    assert listing[0].get("EventList") == "start" and listing[-1].get("EventList") == "Complete"
    assert {m.get("Event") for m in listing[1:-1]} <= {"CoreShowChannel"}
    assert pong["Response"] == "Success"
    assert connection.stats.skipped_events > 0


async def test_shutdown_and_forged_names_are_never_skipped_unread(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "s.ami", [
        b"Event: Newexten", b"Event: @Disconnected", b"Event: Shutdown\r\nShutdown: Cleanly"])
    async with AmiReplayServer([path], username=USER, secret=SECRET) as server:
        queue = EventQueue(100)
        connection = AmiConnection(pbx_for(server), queue.put, wanted=refuse_all)
        async with running(connection):
            (shutdown,) = await take(queue, 1)
            await asyncio.wait_for(server.wait_until(lambda: server.logins >= 2), GUARD)
    assert shutdown.name == "Shutdown"
    assert connection.stats.dropped_frames >= 1  # the forged @ name, dropped loudly
    assert connection.connects >= 2  # Shutdown ended the first session


# --- the daemon -----------------------------------------------------------------------------

async def test_the_daemon_skips_what_no_call_needs_and_journals_only_what_it_needs(
    tmp_path: Path
) -> None:
    frames = [frame for path in TRANSCRIPTS for frame in event_frames(path)]
    wanted = len([frame for frame in frames if wanted_by_tracker(frame)])
    async with AmiReplayServer(TRANSCRIPTS, username=lab.USER, secret=lab.SECRET) as ami, \
            fake_twilio() as twilio:
        config = lab_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url)
        async with running_daemon(config) as daemon:
            await asyncio.wait_for(ami.events_done.wait(), 30)
            await asyncio.wait_for(daemon.wait_drained(), 30)
            (connection,) = daemon.connections
            assert daemon.pipeline is not None and daemon.pipeline.journal is not None
            journaled = daemon.pipeline.journal.written
    assert journaled == wanted
    assert 0 < connection.stats.skipped_events <= len(frames) - wanted


def test_events_skipped_unread_carry_nothing_a_call_uses() -> None:
    """What the tracker refuses changes no call: the same calls come out without them."""
    frames = [frame for path in TRANSCRIPTS for frame in event_frames(path)]

    def completed(keep_all: bool) -> list[str]:
        tracker = CallTracker("pbx1", TrackerSettings(inbound_contexts=("from-pstn",),
                                                      internal_contexts=("from-internal",)))
        out = []
        for tick, frame in enumerate(frames):
            if keep_all or wanted_by_tracker(frame):
                headers = frame.as_dict()
                out += tracker.feed(AmiEvent("pbx1", headers["Event"], headers, tick), tick)
        out += tracker.expire(len(frames) + 1e6)
        return [repr(call) for call in out]

    assert completed(keep_all=False) == completed(keep_all=True)
