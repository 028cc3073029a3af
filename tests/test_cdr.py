"""The CDR fallback: calls whose AMI events were missed, rebuilt or completed from CDR rows.

The rows come from the lab's cdr_sqlite3_custom stand-in (`cdrlab.CdrWriter`) fed with the
real transcripts, and are read back through `cdrsource.SqliteCdrSource` from a real file.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from hangupsms.calls import CallTracker
from hangupsms.cdrlab import LAB_VARIABLES, CdrWriter, lab_variable_columns
from hangupsms.cdrsource import CdrError, SqliteCdrSource
from hangupsms.config import CdrConfig
from hangupsms.frames import event_frames
from hangupsms.models import CHANNELS_EVENT, DISCONNECTED_EVENT, AmiEvent, CdrRow, EndReason
from tests.test_calls import BY_NAME, FIXTURES, SETTINGS, facts, load, replay

# What a call's messages can depend on; a CDR cannot tell the rest (ring times, CEL,
# the agent's display name, how many Hangup events there were).
CDR_FACTS = ("direction", "customer_number", "customer_name", "did", "queue", "answered",
             "disposition", "agent_id", "talk_seconds", "variables")
# a_readonly is a (like every other) without the events of some read classes: its CDRs are
# a's. The anonymous caller withheld the number CDRs also keep.
CDR_NAMES = sorted(set(BY_NAME) - {"a_readonly"})


def _cdr_config(path: Path) -> CdrConfig:
    return CdrConfig(sqlite=path, variables=lab_variable_columns())


async def _rows(tmp_path: Path, *names: str) -> dict[str, list[CdrRow]]:
    writer = CdrWriter(tmp_path / "cdr.db")
    for name in names:
        for frame in event_frames(FIXTURES / f"{name}.ami"):
            writer.happened(frame)
    source = SqliteCdrSource(_cdr_config(tmp_path / "cdr.db"), "UTC")
    grouped: dict[str, list[CdrRow]] = defaultdict(list)
    for row in await source.rows_after(0):
        grouped[row.linkedid].append(row)
    return grouped


@pytest.mark.parametrize("name", CDR_NAMES)
async def test_a_call_rebuilt_from_its_cdrs_alone_has_the_facts_messages_use(
        tmp_path: Path, name: str) -> None:
    [(linkedid, rows)] = (await _rows(tmp_path, name)).items()
    assert linkedid == BY_NAME[name]["linkedid"]
    [seen] = replay(CallTracker("lab", SETTINGS), load(name))
    rebuilt = CallTracker("lab", SETTINGS).from_cdr(linkedid, rows, now=0.0)
    assert rebuilt is not None and rebuilt.end_reason is EndReason.CDR
    got, want = facts(rebuilt), facts(seen)
    # The CDR keeps the variables it was configured to record (the UserEvent's keys aside).
    want["variables"] = {k: v for k, v in want["variables"].items() if k in LAB_VARIABLES}
    assert {f: got[f] for f in CDR_FACTS} == {f: want[f] for f in CDR_FACTS}
    assert rebuilt.started_at <= rebuilt.ended_at
    assert abs(rebuilt.ended_at - seen.ended_at) <= 2


async def test_a_known_call_is_not_rebuilt(tmp_path: Path) -> None:
    [(linkedid, rows)] = (await _rows(tmp_path, "a")).items()
    tracker = CallTracker("lab", SETTINGS)
    replay(tracker, load("a"))
    assert tracker.knows(linkedid)
    assert tracker.from_cdr(linkedid, rows, now=0.0) is None


@pytest.mark.parametrize("cut", [5, 20, 40])
async def test_a_call_cut_off_by_a_gap_is_completed_from_its_cdrs(
        tmp_path: Path, cut: int) -> None:
    """Only the first `cut` events of a (an answered queue call) arrive; then the link drops."""
    linkedid = BY_NAME["a"]["linkedid"]
    rows = (await _rows(tmp_path, "a"))[linkedid]
    events = load("a")
    tracker = CallTracker("lab", SETTINGS)
    now = events[cut].received_at
    for event in events[:cut]:
        assert tracker.feed(event, event.received_at) == []
    tracker.feed(AmiEvent("lab", DISCONNECTED_EVENT, {"Reason": "test"}, now), now)
    [ended] = tracker.feed(AmiEvent("lab", CHANNELS_EVENT, {"Linkedids": ""}, now), now)
    assert ended.end_reason is EndReason.GAP and tracker.holey(linkedid)
    call = tracker.refine(linkedid, [*rows, *rows])  # twice: a row counts once
    assert call is not None and call.end_reason is EndReason.GAP
    [seen] = replay(CallTracker("lab", SETTINGS), load("a"))
    assert (call.answered, call.agent_id, call.queue, call.talk_seconds) == (
        True, "agent1", "support", seen.talk_seconds)


async def test_missing_columns_and_tables_are_named(tmp_path: Path) -> None:
    path = tmp_path / "cdr.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE cdr (uniqueid, channel)")
    db.close()
    with pytest.raises(CdrError, match="has no column linkedid, dstchannel"):
        await SqliteCdrSource(_cdr_config(path), "UTC").rows_after(0)
    with pytest.raises(CdrError, match="no table 'calls'"):
        await SqliteCdrSource(CdrConfig(sqlite=path, table="calls"), "UTC").rows_after(0)
    with pytest.raises(CdrError, match=r"cannot open|unable to open"):
        await SqliteCdrSource(CdrConfig(sqlite=tmp_path / "none.db"), "UTC").rows_after(0)
    with pytest.raises(CdrError, match="not a plain SQL name"):
        SqliteCdrSource(CdrConfig(sqlite=path, table='cdr"; DROP'), "UTC")


async def test_a_call_that_lived_across_a_gap_is_refined_from_its_cdrs(tmp_path: Path) -> None:
    """a loses its middle (the answer, the bridge, its Cdr events) to a gap, then ends."""
    rows = (await _rows(tmp_path, "a"))[BY_NAME["a"]["linkedid"]]
    events = load("a")
    linkedid = BY_NAME["a"]["linkedid"]
    lost = {"AgentConnect", "DialEnd", "BridgeEnter", "Cdr", "QueueCallerLeave"}
    tracker = CallTracker("lab", SETTINGS)
    now = events[0].received_at
    for event in events[:10]:
        tracker.feed(event, event.received_at)
    tracker.feed(AmiEvent("lab", DISCONNECTED_EVENT, {"Reason": "test"}, now), now)
    tracker.feed(AmiEvent("lab", CHANNELS_EVENT, {"Linkedids": linkedid}, now), now)
    kept = [e for e in events[10:] if e.name not in lost
            and not (e.name == "CEL" and e.headers.get("EventName") == "BRIDGE_ENTER")]
    [seen] = replay(tracker, kept)
    assert not seen.answered  # what the events alone said
    assert tracker.holey(linkedid)
    refined = tracker.refine(linkedid, rows)
    assert refined is not None and not tracker.holey(linkedid)
    assert (refined.answered, refined.agent_id, refined.talk_seconds > 0) == (
        True, "agent1", True)
    assert tracker.refine(linkedid, rows) is None  # once
