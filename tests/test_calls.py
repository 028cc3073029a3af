"""CallTracker against the real Asterisk 22 transcripts and their answer key."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.config import PbxConfig
from hangupsms.frames import decode_frame, event_frames, read_transcript
from hangupsms.models import AmiEvent, CompletedCall, EndReason

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
KEY: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "expected-calls.yaml").read_text("utf-8"))
BY_NAME = {item["transcript"]: item for item in KEY}
NAMES = sorted(BY_NAME)
SETTINGS = TrackerSettings.from_pbx(PbxConfig(name="lab"))
LATER = 10.0  # seconds after the last event: every grace has passed, no TTL has

# Every fact of the key; the two timings may differ by one second (billsec truncates).
FACTS = (
    "direction", "customer_number", "customer_name", "presentation_restricted", "did",
    "queue", "answered", "disposition", "queue_abandoned", "agent_id", "agent_name",
    "agents_involved", "talk_seconds", "ring_or_hold_seconds", "variables", "transferred",
    "hangup_events", "cdr_events", "linkedid_end_seen",
)  # fmt: skip
TOLERANT = frozenset({"talk_seconds", "ring_or_hold_seconds"})


def to_event(headers: dict[str, str], now: float) -> AmiEvent:
    return AmiEvent(pbx="lab", name=headers["Event"], headers=headers, received_at=now)


def load(name: str, shift: float = 0.0) -> list[AmiEvent]:
    """A transcript's events, each received at its Asterisk Timestamp (+ shift) as `now`.

    An event without a Timestamp (FullyBooted) is received with the previous (or next) one.
    """
    frames = [frame.as_dict() for frame in event_frames(FIXTURES / f"{name}.ami")]
    now = next(float(headers["Timestamp"]) for headers in frames if "Timestamp" in headers)
    events: list[AmiEvent] = []
    for headers in frames:
        now = float(headers.get("Timestamp", now))
        events.append(to_event(headers, now + shift))
    return events


def without_cel(events: Iterable[AmiEvent]) -> list[AmiEvent]:
    return [event for event in events if event.name != "CEL"]


def replay(tracker: CallTracker, events: list[AmiEvent]) -> list[CompletedCall]:
    calls: list[CompletedCall] = []
    for event in events:
        calls += tracker.feed(event, event.received_at)
    calls += tracker.expire(events[-1].received_at + LATER)
    return calls


def facts(call: CompletedCall) -> dict[str, Any]:
    """The call in the answer key's vocabulary."""
    return {
        "direction": str(call.direction),
        "customer_number": call.customer_number,
        "customer_name": call.customer_name,
        "presentation_restricted": call.presentation_restricted,
        "did": call.did,
        "queue": call.queue,
        "answered": call.answered,
        "disposition": str(call.disposition),
        "queue_abandoned": call.queue_abandoned,
        "agent_id": call.agent_id,
        "agent_name": call.agent_name,
        "agents_involved": list(call.agents_involved),
        "talk_seconds": call.talk_seconds,
        "ring_or_hold_seconds": call.wait_seconds,
        "variables": dict(call.variables),
        "transferred": call.transferred,
        "hangup_events": call.hangup_events,
        "cdr_events": call.cdr_events,
        "linkedid_end_seen": call.linkedid_end_seen,
    }


def assert_facts(call: CompletedCall, expected: dict[str, Any]) -> int:
    """Compare every fact of the key; returns how many were asserted."""
    assert call.pbx == "lab"
    assert call.linkedid == expected["linkedid"]
    got = facts(call)
    wrong = {
        fact: (got[fact], expected[fact]) for fact in FACTS if not _same(fact, got, expected)
    }
    assert not wrong, f"{expected['transcript']}: (got, expected) {wrong}"
    return len(FACTS)


def _same(fact: str, got: dict[str, Any], expected: dict[str, Any]) -> bool:
    if fact in TOLERANT:
        return bool(abs(got[fact] - expected[fact]) <= 1)
    return bool(got[fact] == expected[fact])


def frames_with_offsets(name: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(start offset, headers) of every Event frame, offsets counted from the file's first byte."""
    path = FIXTURES / f"{name}.ami"
    data = path.read_bytes()
    position = 0
    for raw in read_transcript(path)[1]:
        start = data.find(raw, position)
        position = start + len(raw)
        headers = decode_frame(raw).as_dict()
        if "Event" in headers:
            yield start, headers


@pytest.mark.parametrize("name", NAMES)
def test_transcript_yields_one_call_with_the_key_facts(name: str) -> None:
    tracker = CallTracker("lab", SETTINGS)
    events = load(name)
    calls = replay(tracker, events)
    assert len(calls) == 1
    call = calls[0]
    assert_facts(call, BY_NAME[name])
    assert call.end_reason is EndReason.LINKEDID_END
    timestamps = [float(e.headers["Timestamp"]) for e in events if "Timestamp" in e.headers]
    assert call.started_at == timestamps[0]  # the call's first event
    assert call.started_at < call.ended_at <= timestamps[-1]
    assert tracker.live_calls() == 0
    assert tracker.next_deadline() is None


# Without CEL the tracker loses LINKEDID_END (the call ends when its last channel hung up,
# plus no_cel_grace), CEL APP_START (a_readonly's queue then comes from the Cdr LastData and
# its wait is counted from the call's start, 1.50 s instead of 1.00 s: still 1 s truncated),
# CEL HANGUP dialstatus (c's busy still shows in DialEnd and Cdr) and CEL caller ID (every
# transcript also has NewCallerid). So every fact holds except linkedid_end_seen.
@pytest.mark.parametrize("name", NAMES)
def test_transcript_without_cel_ends_on_last_hangup_with_the_same_facts(name: str) -> None:
    tracker = CallTracker("lab", SETTINGS)
    calls = replay(tracker, without_cel(load(name)))
    assert len(calls) == 1
    assert_facts(calls[0], {**BY_NAME[name], "linkedid_end_seen": False})
    assert calls[0].end_reason is EndReason.NO_CHANNELS


def test_without_cel_the_call_ends_exactly_no_cel_grace_after_the_last_hangup() -> None:
    tracker = CallTracker("lab", SETTINGS)
    events = without_cel(load("a"))
    last_hangup = max(e.received_at for e in events if e.name == "Hangup")
    for event in events:
        assert tracker.feed(event, event.received_at) == []
    assert tracker.next_deadline() == pytest.approx(last_hangup + SETTINGS.no_cel_grace)
    assert tracker.expire(last_hangup + SETTINGS.no_cel_grace - 0.001) == []
    assert len(tracker.expire(last_hangup + SETTINGS.no_cel_grace)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_call_is_not_final_before_its_linkedid_end_frame(name: str) -> None:
    expected = BY_NAME[name]
    marker = expected["end_marker_offset_bytes"]
    frames = [headers for start, headers in frames_with_offsets(name) if start < marker]
    end_frame = frames.pop()  # the frame that ends at the marker
    assert end_frame.get("EventName") == "LINKEDID_END"
    assert end_frame["LinkedID"] == expected["linkedid"]
    tracker = CallTracker("lab", SETTINGS)
    now = 0.0
    for headers in frames:
        now = float(headers.get("Timestamp", now))
        assert tracker.feed(to_event(headers, now), now) == []
    # Every channel may be gone already, but CEL flows: only LINKEDID_END ends the call.
    assert tracker.expire(now + 1000.0) == []
    assert tracker.live_calls() == 1
    now += 1000.0
    assert tracker.feed(to_event(end_frame, now), now) == []
    assert tracker.next_deadline() == pytest.approx(now + SETTINGS.end_grace)
    assert tracker.expire(now + SETTINGS.end_grace / 2) == []
    calls = tracker.expire(now + SETTINGS.end_grace)
    assert [call.linkedid for call in calls] == [expected["linkedid"]]


def test_same_stream_twice_yields_the_call_once() -> None:
    tracker = CallTracker("lab", SETTINGS)
    first = replay(tracker, load("a"))
    second = replay(tracker, load("a", shift=100.0))
    assert len(first) == 1
    assert second == []
    assert tracker.live_calls() == 0


def split_at_linkedid_end(name: str) -> tuple[list[AmiEvent], list[AmiEvent]]:
    """The events up to and including LINKEDID_END, and those after it."""
    events = load(name)
    end = next(i for i, e in enumerate(events) if e.headers.get("EventName") == "LINKEDID_END")
    return events[: end + 1], events[end + 1 :]


def test_late_cdr_and_hangup_within_grace_are_counted() -> None:
    before, after = split_at_linkedid_end("a")
    assert [e.name for e in after if e.name in ("Hangup", "Cdr")] == ["Hangup"] + ["Cdr"] * 4
    tracker = CallTracker("lab", SETTINGS)
    for event in before:
        assert tracker.feed(event, event.received_at) == []
    end_now = before[-1].received_at
    for event in after:  # all within end_grace of LINKEDID_END
        assert tracker.feed(event, event.received_at) == []
        assert event.received_at < end_now + SETTINGS.end_grace
    [call] = tracker.expire(end_now + SETTINGS.end_grace)
    assert (call.cdr_events, call.hangup_events, call.talk_seconds) == (4, 6, 2)


def test_events_after_the_grace_are_ignored_and_start_no_new_call() -> None:
    before, after = split_at_linkedid_end("a")
    tracker = CallTracker("lab", SETTINGS)
    for event in before:
        tracker.feed(event, event.received_at)
    end_now = before[-1].received_at
    [call] = tracker.expire(end_now + SETTINGS.end_grace)
    assert (call.cdr_events, call.hangup_events) == (0, 5)
    for event in after:
        assert tracker.feed(event, end_now + 1.0) == []
    assert tracker.live_calls() == 0
    assert tracker.expire(end_now + 100.0) == []


def test_feed_alone_finalises_a_call_whose_grace_passed() -> None:
    tracker = CallTracker("lab", SETTINGS)
    events = load("c")
    for event in events:
        assert tracker.feed(event, event.received_at) == []
    unrelated = to_event({"Event": "FullyBooted", "Status": "Fully Booted"}, 0.0)
    calls = tracker.feed(unrelated, events[-1].received_at + SETTINGS.end_grace)
    assert [call.linkedid for call in calls] == [BY_NAME["c"]["linkedid"]]


def test_all_transcripts_interleaved_each_yield_their_own_facts() -> None:
    events: list[AmiEvent] = []
    for index, name in enumerate(NAMES):  # each call starts 0.3 s after the previous one
        own = load(name)
        events += load(name, shift=index * 0.3 - own[0].received_at)
    events.sort(key=lambda event: event.received_at)  # stable: a call's own order is kept
    tracker = CallTracker("lab", SETTINGS)
    calls = replay(tracker, events)
    assert sorted(call.linkedid for call in calls) == sorted(BY_NAME[n]["linkedid"] for n in NAMES)
    by_linkedid = {item["linkedid"]: item for item in KEY}
    for call in calls:
        assert_facts(call, by_linkedid[call.linkedid])


def test_call_that_never_ends_is_evicted_after_the_ttl_with_a_warning() -> None:
    settings = dataclasses.replace(SETTINGS, call_ttl=60.0)
    tracker = CallTracker("lab", settings)
    events = load("a")
    first_hangup = next(i for i, e in enumerate(events) if e.name == "Hangup")
    for event in events[:first_hangup]:
        assert tracker.feed(event, event.received_at) == []
    created = events[0].received_at
    assert tracker.next_deadline() == pytest.approx(created + 60.0)
    assert tracker.expire(created + 59.9) == []
    with capture_logs() as logs:
        [call] = tracker.expire(created + 60.0)
    assert call.end_reason is EndReason.EVICTED
    assert not call.linkedid_end_seen
    assert call.queue == "support"
    assert [(log["event"], log["log_level"], log["reason"]) for log in logs] == [
        ("calls.evicted", "warning", "ttl")
    ]
    assert tracker.live_calls() == 0
    assert tracker.next_deadline() is None
    for event in events[first_hangup:]:  # the rest of the evicted call is ignored
        assert tracker.feed(event, created + 61.0) == []
    assert tracker.live_calls() == 0


def test_beyond_max_calls_the_oldest_call_is_evicted_with_a_warning() -> None:
    tracker = CallTracker("lab", dataclasses.replace(SETTINGS, max_calls=2))
    starts = [load(name)[:8] for name in ("a", "b", "c")]  # each call's first frames only
    evicted: list[CompletedCall] = []
    with capture_logs() as logs:
        for now, events in enumerate(starts):
            for event in events:
                evicted += tracker.feed(event, float(now))
    assert [call.linkedid for call in evicted] == [BY_NAME["a"]["linkedid"]]
    assert evicted[0].end_reason is EndReason.EVICTED
    assert [(log["event"], log["reason"]) for log in logs] == [("calls.evicted", "max_calls")]
    assert tracker.live_calls() == 2


def test_events_of_a_call_whose_start_was_missed_are_not_tracked() -> None:
    tracker = CallTracker("lab", SETTINGS)
    events = load("g")
    midway = next(i for i, e in enumerate(events) if e.name == "DialBegin")
    assert replay(tracker, events[midway:]) == []
    assert tracker.live_calls() == 0


def test_settings_come_from_the_pbx_config() -> None:
    pbx = PbxConfig(name="x", inbound_contexts=("in",), end_grace=0.5, max_calls=7)
    settings = TrackerSettings.from_pbx(pbx)
    assert (settings.inbound_contexts, settings.end_grace, settings.max_calls) == (("in",), 0.5, 7)
    assert settings.internal_contexts == ("from-internal",)


def literal_call(frames: list[dict[str, str]]) -> CompletedCall:
    """Feed hand-written events one second apart (no CEL); the one call they make."""
    tracker = CallTracker("lab", SETTINGS)
    calls: list[CompletedCall] = []
    for index, headers in enumerate(frames):
        now = 100.0 + index
        event = to_event({"Timestamp": f"{1000.0 + index}", **headers}, now)
        calls += tracker.feed(event, now)
    calls += tracker.expire(100.0 + len(frames) + LATER)
    [call] = calls
    return call


def channel(event: str, name: str, uniqueid: str, **headers: str) -> dict[str, str]:
    return {"Event": event, "Channel": name, "Uniqueid": uniqueid, "Linkedid": "L", **headers}


TRUNK = "PJSIP/trunk-00000001"


def test_after_a_transfer_the_agent_is_the_second_and_talk_sums_both_legs() -> None:
    # Hand-written (no transcript has a transfer yet): a trunk call answered by agent3, who
    # blind-transfers it; the caller leg then dials agent4. agent3's Cdr comes mid-call.
    call = literal_call(
        [
            channel("Newchannel", TRUNK, "L", Context="from-pstn", Exten="4000",
                    CallerIDNum="+447700900123", CallerIDName="Alice"),
            channel("Newchannel", "PJSIP/agent3-00000002", "L2", Context="from-internal"),
            channel("DialEnd", TRUNK, "L", DestChannel="PJSIP/agent3-00000002",
                    DialStatus="ANSWER"),
            {"Event": "BlindTransfer", "TransfereeLinkedid": "L", "Result": "Success"},
            {"Event": "Cdr", "Channel": TRUNK, "UniqueID": "L", "Disposition": "ANSWERED",
             "DestinationChannel": "PJSIP/agent3-00000002", "BillableSeconds": "5"},
            channel("Hangup", "PJSIP/agent3-00000002", "L2"),
            channel("Newchannel", "PJSIP/agent4-00000003", "L3", Context="from-internal"),
            channel("DialEnd", TRUNK, "L", DestChannel="PJSIP/agent4-00000003",
                    DialStatus="ANSWER"),
            channel("Hangup", TRUNK, "L"),
            channel("Hangup", "PJSIP/agent4-00000003", "L3"),
            {"Event": "Cdr", "Channel": TRUNK, "UniqueID": "L", "Disposition": "ANSWERED",
             "DestinationChannel": "PJSIP/agent4-00000003", "BillableSeconds": "7"},
        ]
    )  # fmt: skip
    assert (call.direction, call.did, call.customer_number) == ("inbound", "4000", "+447700900123")
    assert (call.agent_id, call.agents_involved, call.transferred) == (
        "agent4",
        ("agent3", "agent4"),
        True,
    )
    assert (call.talk_seconds, call.wait_seconds, call.cdr_events) == (12, 2, 2)
    assert call.end_reason is EndReason.NO_CHANNELS


@pytest.mark.parametrize(
    ("exten", "dial_string", "direction", "customer"),
    [
        ("202", "PJSIP/202", "internal", ""),
        ("s", "+33612345678@trunk", "outbound", "+33612345678"),
        ("07700900456", "", "outbound", "07700900456"),  # no dial yet: the channel's Exten
    ],
)
def test_a_call_from_an_internal_context_is_outbound_only_to_an_outside_number(
    exten: str, dial_string: str, direction: str, customer: str
) -> None:
    phone = "PJSIP/201-00000001"
    frames = [
        channel("Newchannel", phone, "L", Context="from-internal", Exten=exten,
                CallerIDNum="201", CallerIDName="Agent One"),
        channel("Hangup", phone, "L"),
    ]  # fmt: skip
    if dial_string:
        frames.insert(1, channel("DialBegin", phone, "L", DialString=dial_string))
    call = literal_call(frames)
    assert (call.direction, call.customer_number, call.did) == (direction, customer, None)
    if direction == "outbound":
        assert (call.agent_id, call.agent_name, call.customer_name) == ("201", "Agent One", "")


@pytest.mark.parametrize("mapped", [True, False], ids=["linkedid-mapped", "not-mapped"])
def test_a_cdr_of_a_leg_never_seen_counts_when_cdr_manager_maps_the_linkedid(
    mapped: bool,
) -> None:
    # Transcript a's Cdr events with UniqueIDs the tracker never saw (as after a missed
    # Newchannel); cdr_manager.conf `[mappings] linkedid => LinkedID` still names the call.
    events = load("a")
    linkedid = BY_NAME["a"]["linkedid"]
    changed = []
    for event in events:
        if event.name == "Cdr":
            headers = {**event.headers, "UniqueID": "9999." + event.headers["UniqueID"]}
            if mapped:
                headers["LinkedID"] = linkedid
            event = dataclasses.replace(event, headers=headers)
        changed.append(event)
    [call] = replay(CallTracker("lab", SETTINGS), changed)
    assert (call.cdr_events, call.talk_seconds) == ((4, 2) if mapped else (0, 1))
