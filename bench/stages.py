"""The stages after the tracker, one at a time: planning (pure), the outbox, the journal.

Same calls as the end-to-end run (completed by the tracker from generated traffic), the
reference configuration, a real SQLite file with the store's own settings (WAL,
synchronous=FULL: every commit waits for the disk). Time per operation, in milliseconds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.traffic import REFERENCE_CONFIG, traffic
from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.config import load_config
from hangupsms.journal import Journal
from hangupsms.models import AmiEvent, CompletedCall, MessageState
from hangupsms.phone import check_number
from hangupsms.planner import plan
from hangupsms.render import Renderer
from hangupsms.store import Store


def completed_calls(calls: int) -> tuple[list[CompletedCall], list[AmiEvent]]:
    """The calls the tracker completes, and the events it journals (those it wants)."""
    cfg = load_config(REFERENCE_CONFIG, environ={})
    pbx = cfg.pbx[0].name
    tracker = CallTracker(pbx, TrackerSettings.from_pbx(cfg.pbx[0]))
    done: list[CompletedCall] = []
    journaled: list[AmiEvent] = []
    at = 0.0
    for at, headers in traffic(calls, 50).timed_headers():
        event = AmiEvent(pbx, headers["Event"], headers, at)
        if tracker.wants(event.name, headers.get):
            journaled.append(event)
        done += tracker.feed(event, at)
    return done + tracker.expire(at + 3600.0), journaled


async def journal_costs(store: Store, events: list[AmiEvent], calls: int) -> dict[str, Any]:
    """The intake journal: batched flushes (a burst), one flush per event (a quiet queue)."""
    journal = Journal(store)
    started = time.perf_counter()
    for event in events:
        journal.add(event)
        if journal.full:
            await journal.flush()
    await journal.flush()
    batched = time.perf_counter() - started
    # The daemon trims after recording calls: the rows before the oldest call still live.
    first_seen = dict.fromkeys(e.headers.get("Linkedid") or e.headers.get("LinkedID") or ""
                               for e in events)
    linkedids = [linkedid for linkedid in first_seen if linkedid]
    started = time.perf_counter()
    for done in range(1, len(linkedids) + 1):
        await journal.trim(events[0].pbx, linkedids[done:])
    trim = time.perf_counter() - started
    single = events[:200]
    started = time.perf_counter()
    for event in single:
        journal.add(event)
        await journal.flush()
    alone = time.perf_counter() - started
    return {
        "journal_events_per_call": round(len(events) / calls, 1),
        "journal_ms_per_call_batched": round(batched / calls * 1e3, 3),
        "journal_ms_per_flush_of_one": round(alone / len(single) * 1e3, 3),
        "journal_trim_ms_per_call": round(trim / max(len(linkedids), 1) * 1e3, 3),
    }


async def measure(calls: int) -> dict[str, Any]:
    cfg = load_config(REFERENCE_CONFIG, environ={})
    renderer = Renderer.from_config(cfg)
    finished, journaled = completed_calls(calls)
    started = time.perf_counter()
    planned = [(call, plan(call, cfg, renderer),
                check_number(call.customer_number, cfg.phone).e164) for call in finished]
    planning = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="hangupsms-bench-") as tmp:
        store = await Store.open(Path(tmp) / "stages.db")
        try:
            started = time.perf_counter()
            for call, messages, e164 in planned:
                await store.record_call(call, e164, messages, time.time())
            recording = time.perf_counter() - started
            claims = sent = 0
            claiming = finishing = 0.0
            while True:
                started = time.perf_counter()
                batch = await store.claim_due(time.time(), 20)
                claiming += time.perf_counter() - started
                if not batch:
                    break
                claims += 1
                started = time.perf_counter()
                for message in batch:
                    await store.finish(message.id, MessageState.SENT, time.time(),
                                       outcome="accepted", provider_id=f"SM{message.id:032x}")
                    sent += 1
                finishing += time.perf_counter() - started
            journal = await journal_costs(store, journaled, len(finished))
        finally:
            await store.close()
    return {
        "calls": len(finished), "messages": sent,
        "plan_ms_per_call": round(planning / len(finished) * 1e3, 3),
        "record_call_ms": round(recording / len(finished) * 1e3, 3),
        "claim_due_ms_per_batch_of_20": round(claiming / max(claims, 1) * 1e3, 3),
        "finish_ms_per_message": round(finishing / max(sent, 1) * 1e3, 3),
        "outbox_ms_per_call": round((recording + claiming + finishing) / len(finished) * 1e3, 3),
    } | journal
