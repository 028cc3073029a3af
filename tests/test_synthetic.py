"""Generated traffic: many concurrent copies of the recordings, each with its recording's facts."""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hangupsms.calls import CallTracker
from hangupsms.config import load_config
from hangupsms.frames import Frame, decode_frame, event_frames
from hangupsms.models import AmiEvent, CompletedCall
from hangupsms.planner import plan
from hangupsms.render import Renderer
from hangupsms.synthetic import (
    RECORDING_ARTEFACTS,
    SyntheticCall,
    SyntheticTraffic,
    keep_events,
    synthetic_stream,
)
from tests.test_calls import BY_NAME, SETTINGS, assert_facts

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
TRANSCRIPTS = sorted(FIXTURES.glob("*.ami"))
EXPECTED: dict[str, list[dict[str, Any]]] = yaml.safe_load(
    (FIXTURES / "expected-messages.yaml").read_text(encoding="utf-8")
)
CALLS, CONCURRENCY = 200, 20
LATER = 10.0  # seconds after the last event: every grace has passed
# The events CallTracker acts on (calls.py `_routes`): what an `eventfilter` may keep.
TRACKED = (
    "Newchannel", "NewCallerid", "Hangup", "DialBegin", "DialEnd", "BridgeEnter", "VarSet",
    "UserEvent", "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentConnect",
    "BlindTransfer", "AttendedTransfer", "Cdr", "CEL",
)  # fmt: skip
IDENTITIES = frozenset({"Uniqueid", "UniqueID", "DestUniqueid", "Channel", "DestChannel",
                        "BridgeUniqueid"})


@dataclass(frozen=True, slots=True)
class Generated:
    traffic: SyntheticTraffic
    calls: dict[str, SyntheticCall]  # by linkedid
    frames: list[tuple[float, Frame, dict[str, str]]]  # decoded; as the tracker got them
    completed: list[CompletedCall]


def generate(calls: int = CALLS, concurrency: int = CONCURRENCY, **options: Any) -> Generated:
    traffic = SyntheticTraffic(calls, concurrency=concurrency, seed=7, transcripts=TRANSCRIPTS,
                               **options)
    frames = [(at, frame, frame.as_dict())
              for at, raw in traffic.timed_frames() if (frame := decode_frame(raw))]
    tracker = CallTracker("lab", SETTINGS)
    completed: list[CompletedCall] = []
    for at, _, headers in frames:
        completed += tracker.feed(AmiEvent("lab", headers["Event"], headers, at), at)
    completed += tracker.expire(frames[-1][0] + LATER)
    return Generated(traffic, {c.linkedid: c for c in traffic.calls()}, frames, completed)


@pytest.fixture(scope="module")
def plain() -> Generated:
    return generate()


@pytest.fixture(scope="module")
def distinct() -> Generated:
    return generate(40, 8, distinct_numbers=True)


@functools.cache
def template_frames(name: str) -> list[Frame]:
    """The recorded frames a copy of `name` repeats."""
    return [f for f in event_frames(FIXTURES / f"{name}.ami")
            if f.first("Event") not in RECORDING_ARTEFACTS]


def linkedid_of(headers: dict[str, str]) -> str | None:
    """The call's Linkedid (CEL spells it LinkedID); None for an event of no call."""
    return headers.get("Linkedid") or headers.get("LinkedID")


def expected_facts(call: SyntheticCall) -> dict[str, Any]:
    """The answer key of the call's transcript, for this copy's Linkedid and numbers."""
    key = BY_NAME[call.template]
    number = call.rewrite(key["customer_number"])
    return {**key, "linkedid": call.linkedid, "customer_number": number}


def assert_each_call_has_its_transcripts_facts(generated: Generated) -> None:
    assert len(generated.completed) == generated.traffic.n_calls
    assert {c.linkedid for c in generated.completed} == set(generated.calls)
    for completed in generated.completed:
        assert_facts(completed, expected_facts(generated.calls[completed.linkedid]))


def test_every_generated_call_yields_the_facts_of_its_transcript(plain: Generated) -> None:
    assert_each_call_has_its_transcripts_facts(plain)
    # Every transcript is copied, several times each: the mix is not one call repeated.
    assert set(Counter(c.template for c in plain.calls.values())) == set(BY_NAME)
    assert plain.traffic.sources() == {k: c.template for k, c in plain.calls.items()}


def test_distinct_numbers_change_the_customer_and_keep_every_other_fact(
    distinct: Generated,
) -> None:
    assert_each_call_has_its_transcripts_facts(distinct)
    gb = [c.customer_number for c in distinct.completed if "7700900" in c.customer_number]
    assert len(gb) > len(distinct.completed) / 2
    assert len(set(gb)) == len(gb)  # fewer than 1000 calls: no drama-range number repeats


@pytest.mark.parametrize("numbers", ["kept", "distinct"])
def test_reference_config_plans_each_copy_the_messages_of_its_transcript(
    plain: Generated, distinct: Generated, numbers: str
) -> None:
    generated = plain if numbers == "kept" else distinct
    cfg = load_config(FIXTURES / "reference.yaml", environ={})
    renderer = Renderer.from_config(cfg)
    for completed in generated.completed:
        call = generated.calls[completed.linkedid]
        [expected] = EXPECTED[call.template]
        planned = plan(completed, cfg, renderer)
        sent = [(m.rule, m.to, m.body.text if m.body else "") for m in planned if not m.skip_reason]
        assert sent == [(m["rule"], call.rewrite(m["to"]), call.rewrite(m["body"]))
                        for m in expected["sent"]]
        skipped = [(m.rule, m.skip_reason or "") for m in planned if m.skip_reason]
        assert [rule for rule, _ in skipped] == [m["rule"] for m in expected["skipped"]]
        for (_, reason), item in zip(skipped, expected["skipped"], strict=True):
            assert reason.startswith(call.rewrite(item["why"]))


def test_copies_share_no_uniqueid_channel_or_bridge_and_none_of_the_recordings(
    plain: Generated,
) -> None:
    owner: dict[str, str] = {}  # identity -> the one Linkedid whose events carry it
    for _, frame, headers in plain.frames:
        linkedid = linkedid_of(headers)
        for key, value in frame.headers:
            if linkedid and key in IDENTITIES and value:
                assert owner.setdefault(value, linkedid) == linkedid, (key, value)
    # Channel sequences may meet a recorded one again (Asterisk's counter), Uniqueids never:
    # they start with the epoch second.
    recorded = {v for name in BY_NAME for f in template_frames(name) for k, v in f.headers
                if k in IDENTITIES and "Channel" not in k}
    assert not recorded & set(owner)
    channels = {value for value in owner if "/" in value}
    assert len(channels) == sum(len(_channels(template_frames(c.template)))
                                for c in plain.calls.values())
    assert len({v for v in owner if v.count("-") == 4}) > len(plain.calls) / 2  # bridges


def _channels(frames: list[Frame]) -> set[str]:
    return {v for f in frames if f.first("Linkedid") for k, v in f.headers if k == "Channel"}


def test_events_keep_their_order_and_spacing_within_each_call(plain: Generated) -> None:
    per_call: dict[str, list[dict[str, str]]] = defaultdict(list)
    for _, _, headers in plain.frames:
        if linkedid := linkedid_of(headers):
            per_call[linkedid].append(headers)
    for linkedid, events in per_call.items():
        template = [h for f in template_frames(plain.calls[linkedid].template)
                    if linkedid_of(h := f.as_dict())]
        assert [_kind(h) for h in events] == [_kind(h) for h in template]
        shift = _time(events[0]) - _time(template[0])
        for copy, recorded in zip(events, template, strict=True):
            assert _time(copy) - _time(recorded) == pytest.approx(shift, abs=2e-6)


def _time(headers: dict[str, str]) -> float:
    return float(headers.get("Timestamp", "nan"))


def _kind(headers: dict[str, str]) -> tuple[str | None, str | None]:
    return headers.get("Event"), headers.get("EventName")


def test_the_stream_moves_forward_in_time_with_exactly_the_asked_concurrency(
    plain: Generated,
) -> None:
    times = [at for at, _, _ in plain.frames]
    assert times == sorted(times)
    assert [_time(headers) for _, _, headers in plain.frames] == pytest.approx(times, abs=1e-6)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for at, _, headers in plain.frames:
        if linkedid := linkedid_of(headers):
            first.setdefault(linkedid, at)
            last[linkedid] = at
    edges = sorted([(at, 1) for at in first.values()] + [(at, -1) for at in last.values()])
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    assert peak == CONCURRENCY


def test_same_seed_same_bytes_other_seed_other_calls() -> None:
    two = TRANSCRIPTS[:2]
    once = b"".join(synthetic_stream(12, concurrency=3, seed=1, transcripts=two))
    again = b"".join(synthetic_stream(12, concurrency=3, seed=1, transcripts=two))
    other = b"".join(synthetic_stream(12, concurrency=3, seed=2, transcripts=two))
    assert once == again
    assert once != other
    frames = once.split(b"\r\n\r\n")
    assert frames.pop() == b""  # every frame ends with its blank line
    assert all(frame.startswith(b"Event: ") for frame in frames)  # no banner, no response


def test_header_events_equal_the_decoded_frames(plain: Generated) -> None:
    headers = list(plain.traffic.timed_headers())
    assert len(headers) == len(plain.frames)
    for (at, _, decoded), (at_too, generated) in zip(plain.frames, headers, strict=True):
        assert at == at_too
        assert generated == decoded


def only_what_the_tracker_uses(frame: Frame) -> bool:
    """The AMI-side filter bench/ recommends: tracked events, and VarSet of our variables."""
    name = frame.first("Event")
    if name == "VarSet":
        return (frame.first("Variable") or "").startswith("HANGUPSMS_")
    return name in TRACKED


def test_an_event_filter_keeping_only_what_the_tracker_uses_keeps_every_fact() -> None:
    filtered = generate(40, 8, keep=only_what_the_tracker_uses)
    assert_each_call_has_its_transcripts_facts(filtered)
    names = Counter(headers["Event"] for _, _, headers in filtered.frames)
    assert set(names) <= set(TRACKED)
    assert 0 < names["VarSet"] < names["Newchannel"]  # only the HANGUPSMS_* ones are left
    assert "Newexten" not in names


def test_keep_events_passes_only_the_named_events() -> None:
    traffic = SyntheticTraffic(5, concurrency=2, seed=3, transcripts=TRANSCRIPTS[:2],
                               keep=keep_events(["CEL", "Cdr"]))
    names = Counter(headers["Event"] for _, headers in traffic.timed_headers())
    assert set(names) == {"CEL", "Cdr"}
    assert names["CEL"] > names["Cdr"] > 0
