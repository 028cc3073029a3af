"""The call tracker fed hostile header dicts: it never raises, stays bounded, and every call it
emits can be planned (rendered, and stored as numbers SQLite can hold).

Streams are the recorded calls with junk put in: header values from pools of huge, negative,
non-finite and non-ASCII numbers, malformed times, control characters and 5,000-character
strings; headers removed; junk events of the tracker's own route table and CEL names about
known, odd and fresh ids in between; a clock jump past every TTL.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.config import Config, load_config
from hangupsms.frames import event_frames
from hangupsms.models import CHANNELS_EVENT, DISCONNECTED_EVENT, AmiEvent, CompletedCall
from hangupsms.planner import plan
from hangupsms.render import Renderer

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
SETTINGS = TrackerSettings(("from-pstn",), ("from-internal",), end_grace=0.2, no_cel_grace=2.0,
                           call_ttl=300.0, max_calls=3)
_PROBE = CallTracker("probe", SETTINGS)  # for its own route table and CEL names
EVENT_NAMES = [*sorted(_PROBE._routes), DISCONNECTED_EVENT, CHANNELS_EVENT, "Shutdown", "", "cel"]
CEL_NAMES = [*sorted(_PROBE._cel), "", "chan_start", "X" * 500, "LINKEDID_END\x00"]
BASE = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NO_SHRINK = settings(BASE, phases=[Phase.explicit, Phase.generate])
SQLITE_INT = 2**63  # larger integers cannot be stored

IDS = ["1796413068.0", "1796413068.1", "7.7", "", " ", "x" * 300]
CHANNELS = [
    "PJSIP/trunk-00000001", "Local/agent1@agents-00000003;1", "Local/agent1@agents-00000003;2",
    "", ";1", "Local/", "PJSIP/" + "x" * 5000,
]  # fmt: skip
# Numbers the tracker always read correctly.
NUMBERS = ["0", "1", "-1", "-0", "+5", " 7 ", "1_0", "1e3", "١٢", "1796413070.25",
           "99999999999", ""]
# Numbers that once crashed the tracker or the planner (regression tests below).
ONCE_CRASHING_NUMBERS = ["abc", "nan", "inf", "-inf", "1e999", "1e300", "-1e300", "9" * 5000, "²",
                    "35 (Presentation Prohibited)", "0x20"]
TIMES = ["2026-12-04 10:00:00", "junk", "9999-12-31 23:59:59", "0001-01-01 00:00:00", ""]
TEXTS = ["", "ANSWER", "BUSY", "CANCEL", "ANSWERED", "Queue", "HangupSMS", "HANGUPSMS_ORDER",
         '{"dialstatus":"BUSY"}', "from-pstn", "+447700900123", "anonymous", "\x00", "{{7*7}}",
         "\u202e\r\n", "x" * 5000, *IDS, *CHANNELS, *TIMES]
NUMERIC_KEYS = frozenset({"Timestamp", "BillableSeconds", "HoldTime", "CID-CallingPres",
                          "Duration", "QUEUEPOS", "Position"})


def transcript(name: str) -> list[tuple[float, dict[str, str]]]:
    """A recording's events, each received at its Asterisk Timestamp."""
    out: list[tuple[float, dict[str, str]]] = []
    now = 0.0
    for frame in event_frames(FIXTURES / f"{name}.ami"):
        headers = frame.as_dict()
        now = float(headers.get("Timestamp", now))
        out.append((now, headers))
    return out


RECORDINGS = {path.stem: transcript(path.stem) for path in sorted(FIXTURES.glob("*.ami"))}


@st.composite
def junk_event(draw: st.DrawFn) -> dict[str, str]:
    """An event of a routed name about a known, odd or fresh id, with junk headers."""
    ids = st.one_of(st.sampled_from(IDS), st.integers(0, 9).map(lambda n: f"9.{n}"))
    linkedid = draw(ids)
    headers = {"Event": draw(st.sampled_from(EVENT_NAMES)), "Linkedid": linkedid,
               "LinkedID": linkedid, "Uniqueid": linkedid, "UniqueID": linkedid,
               "EventName": draw(st.sampled_from(CEL_NAMES)),
               "Linkedids": " ".join(draw(st.lists(ids, max_size=3)))}
    for key in draw(st.lists(st.sampled_from(sorted(headers)), max_size=3)):
        headers[key] = draw(ids)  # a Uniqueid of another call, a missing Linkedid...
    return headers


@st.composite
def hostile_streams(draw: st.DrawFn, numbers: list[str]) -> list[tuple[float, AmiEvent]]:
    """A recorded call whose events got junk values, lost headers, and junk events between."""
    stream = [(now, dict(h)) for now, h in RECORDINGS[draw(st.sampled_from(sorted(RECORDINGS)))]]
    routed = [i for i, (_, h) in enumerate(stream) if h.get("Event") in EVENT_NAMES]
    for _ in range(draw(st.sampled_from([0, 3, 10, 25]))):
        headers = stream[draw(st.sampled_from(routed))][1]
        numeric = sorted(NUMERIC_KEYS.intersection(headers))
        prefer_numeric = draw(st.booleans())
        keys = numeric if numeric and prefer_numeric else sorted(headers)
        if not keys:
            continue
        key = keys[draw(st.integers(0, len(keys) - 1))]
        if draw(st.integers(0, 4)) == 0:
            del headers[key]
        else:
            pool = numbers if key in NUMERIC_KEYS or key == "EventTime" else TEXTS
            headers[key] = draw(st.sampled_from(pool))
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(stream)))
        stream.insert(at, (stream[min(at, len(stream) - 1)][0], draw(junk_event())))
    for n in range(draw(st.sampled_from([0, 0, 6]))):  # a flood of calls past max_calls
        at = draw(st.integers(0, len(stream)))
        flood = {"Event": "Newchannel", "Uniqueid": f"8.{n}", "Linkedid": f"8.{n}"}
        stream.insert(at, (stream[min(at, len(stream) - 1)][0], flood))
    if draw(st.booleans()):  # a clock jump past every TTL in the middle
        cut = draw(st.integers(0, len(stream)))
        stream = stream[:cut] + [(now + 1000.0, h) for now, h in stream[cut:]]
    return [(now, AmiEvent("lab", h.get("Event", ""), h, 0.0)) for now, h in stream]


def run_tracker(stream: list[tuple[float, AmiEvent]]) -> list[CompletedCall]:
    """Feed everything, then expire everything; checks the bounds on the way."""
    tracker = CallTracker("lab", SETTINGS)
    emitted: list[CompletedCall] = []
    for now, event in stream:
        emitted += tracker.feed(event, now)
        assert tracker.live_calls() <= SETTINGS.max_calls
    emitted += tracker.expire(math.inf)
    assert tracker.live_calls() == 0
    linkedids = [call.linkedid for call in emitted]
    assert len(linkedids) == len(set(linkedids))  # each call emitted once
    return emitted


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(FIXTURES / "reference.yaml", environ={})


def assert_plannable(calls: list[CompletedCall], cfg: Config) -> None:
    renderer = Renderer.from_config(cfg)
    for call in calls:
        assert 0 <= call.talk_seconds < SQLITE_INT and 0 <= call.wait_seconds < SQLITE_INT
        assert math.isfinite(call.started_at) and math.isfinite(call.ended_at)
        plan(call, cfg, renderer)


def start(**headers: str) -> AmiEvent:
    base = {"Uniqueid": "1.1", "Linkedid": "1.1", "Channel": "PJSIP/trunk-00000001",
            "Context": "from-pstn", "Exten": "4000", "CallerIDNum": "+447700900123",
            "Timestamp": "1796413068.0"}
    return AmiEvent("lab", "Newchannel", {**base, **headers}, 0.0)


def answer(**headers: str) -> AmiEvent:
    base = {"Linkedid": "1.1", "Channel": "PJSIP/trunk-00000001", "DialStatus": "ANSWER",
            "DestChannel": "PJSIP/100-00000002", "Timestamp": "1796413069.0"}
    return AmiEvent("lab", "DialEnd", {**base, **headers}, 0.0)


def hangup(**headers: str) -> AmiEvent:
    base = {"Uniqueid": "1.1", "Linkedid": "1.1", "Timestamp": "1796413075.0"}
    return AmiEvent("lab", "Hangup", {**base, **headers}, 0.0)


def cdr(**headers: str) -> AmiEvent:
    base = {"UniqueID": "1.1", "Channel": "PJSIP/trunk-00000001", "Disposition": "ANSWERED",
            "DestinationChannel": "PJSIP/100-00000002", "BillableSeconds": "6"}
    return AmiEvent("lab", "Cdr", {**base, **headers}, 0.0)


def caller_id(**headers: str) -> AmiEvent:
    base = {"Linkedid": "1.1", "Channel": "PJSIP/trunk-00000001",
            "CallerIDNum": "+447700900123", "CID-CallingPres": "0"}
    return AmiEvent("lab", "NewCallerid", {**base, **headers}, 0.0)


@given(stream=hostile_streams(NUMBERS))
@settings(BASE, max_examples=120)
def test_hostile_events_never_raise_and_live_calls_stay_bounded(
    stream: list[tuple[float, AmiEvent]], cfg: Config
) -> None:
    assert_plannable(run_tracker(stream), cfg)


@given(stream=hostile_streams(NUMBERS + ONCE_CRASHING_NUMBERS))
@example(stream=[(0.0, start(Timestamp="abc"))])  # once crashed
@settings(NO_SHRINK, max_examples=120, report_multiple_bugs=False)
def test_hostile_numbers_never_raise_and_every_call_can_be_planned(
    stream: list[tuple[float, AmiEvent]], cfg: Config
) -> None:
    assert_plannable(run_tracker(stream), cfg)


CRASHES = [
    pytest.param([start(Timestamp="abc")], id="Timestamp-not-a-number"),
    pytest.param([start(), hangup(Timestamp="nan")], id="Timestamp-nan"),
    pytest.param([start(), hangup(Timestamp="inf")], id="Timestamp-inf"),
    pytest.param([start(), answer(), hangup(Timestamp="1e300")], id="Timestamp-1e300"),
    pytest.param([start(Timestamp="-inf"), hangup()], id="Timestamp-minus-inf"),
    pytest.param([start(), cdr(BillableSeconds="9" * 5000)], id="BillableSeconds-5000-digits"),
    pytest.param([start(), cdr(BillableSeconds="²")], id="BillableSeconds-superscript-two"),
    pytest.param([start(), caller_id(**{"CID-CallingPres": "³"})], id="CallingPres-superscript"),
]


@pytest.mark.parametrize("stream", CRASHES)
def test_a_hostile_number_is_read_as_unknown_not_fatal(
    stream: list[AmiEvent], cfg: Config
) -> None:
    tracker = CallTracker("lab", SETTINGS)
    calls = [call for event in stream for call in tracker.feed(event, 0.0)]
    calls += tracker.expire(math.inf)
    assert [call.linkedid for call in calls] == ["1.1"]
    assert_plannable(calls, cfg)


def test_the_tracker_still_reads_a_plain_call_after_junk_events(cfg: Config) -> None:
    junk = [AmiEvent("lab", name, {"Linkedid": "1.1", "UniqueID": "1.1", "EventName": "HANGUP"},
                     0.0) for name in EVENT_NAMES if not name.startswith("@")]
    tracker = CallTracker("lab", SETTINGS)
    stream = [start(), *junk, answer(), cdr(), hangup()]
    calls = [call for event in stream for call in tracker.feed(event, 0.0)]
    [call] = calls + tracker.expire(math.inf)
    assert (call.customer_number, call.answered, call.talk_seconds) == ("+447700900123", True, 6)
    assert_plannable([call], cfg)
