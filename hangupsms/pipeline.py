"""The middle of the pipeline: AMI events in, calls recorded with their planned messages."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import structlog

from hangupsms.callevents import HeaderLookup
from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.cdrrecovery import CdrRecovery
from hangupsms.cdrsource import SqliteCdrSource
from hangupsms.config import Config
from hangupsms.journal import Journal
from hangupsms.logs import mask_number
from hangupsms.models import (
    CHANNELS_EVENT,
    DISCONNECTED_EVENT,
    AmiEvent,
    CdrRow,
    CompletedCall,
)
from hangupsms.phone import check_number
from hangupsms.planner import plan
from hangupsms.policy import suppress
from hangupsms.policystore import PolicyStore
from hangupsms.render import Renderer
from hangupsms.store import CallToRecord, Store

log = structlog.get_logger(__name__)


class CallPipeline:
    """The middle of the pipeline: events in, calls recorded with their planned messages."""

    def __init__(
        self, cfg: Config, store: Store, *, on_recorded: Callable[[], None] = lambda: None,
        wall_clock: Callable[[], float] = time.time, journal: bool = True,
    ) -> None:
        self.cfg = cfg
        self._store = store
        self._policy = PolicyStore(store)
        self._renderer = Renderer.from_config(cfg)
        self._trackers = {
            pbx.name: CallTracker(pbx.name, TrackerSettings.from_pbx(pbx)) for pbx in cfg.pbx
        }
        self._on_recorded = on_recorded
        self._wall_clock = wall_clock
        self.calls_recorded = 0
        self.events_fed = 0  # AMI events handed to a tracker (the /metrics counter)
        self.journal = Journal(store) if journal else None
        self._trim_due = False
        self.cdr = CdrRecovery(store, _cdr_sources(cfg))

    def reconfigure(self, cfg: Config) -> None:
        """Rules, templates, numbers and call settings of `cfg` apply from the next call on."""
        self.cfg = cfg
        self._renderer = Renderer.from_config(cfg)
        for pbx in cfg.pbx:
            tracker = self._trackers.get(pbx.name)
            if tracker is not None:
                tracker.reconfigure(TrackerSettings.from_pbx(pbx))

    def needs_await(self, event: AmiEvent) -> bool:
        """Whether `event` must go through `feed_async` (a channel list with a CDR source)."""
        return event.name == CHANNELS_EVENT and self.cdr.covers(event.pbx)

    async def feed_async(self, event: AmiEvent, now: float) -> list[CompletedCall]:
        """`feed`, with the CDR database consulted around a channel list (see cdrrecovery)."""
        tracker = self._trackers.get(event.pbx)
        if tracker is None or not self.needs_await(event):
            return self.feed(event, now)
        live = event.headers.get("Linkedids", "").split()
        finished = self.feed(event, now)
        return finished + await self.cdr.missed_calls(tracker, live, now)

    def feed(self, event: AmiEvent, now: float) -> list[CompletedCall]:
        tracker = self._trackers.get(event.pbx)
        if tracker is None:
            return []
        self.events_fed += 1
        if self.journal is not None and tracker.wants(event.name, event.headers.get):
            self.journal.add(event)
        return tracker.feed(event, now)

    def wanted_events(self, pbx: str) -> Callable[[str, HeaderLookup], bool]:
        """Which events of `pbx` can change a call (the AMI reader skips the others)."""
        return self._trackers[pbx].wants

    async def sync_journal(self, *, trim: bool = True) -> None:
        """Write buffered events; after calls were recorded (and if `trim`), trim what no live
        call needs."""
        if self.journal is None:
            return
        await self.journal.flush()
        if self._trim_due and trim:
            self._trim_due = False
            for name, tracker in self._trackers.items():
                await self.journal.trim(name, tracker.live_linkedids())

    async def restore(self, now: float) -> None:
        """Resume the calls a previous run was following, from the journal.

        Their ends may have come while nobody listened: each tracker is told the link was
        down, so the first channel list after login finishes those that Asterisk no longer
        has. A call that was already recorded is recorded once (the key is unique). On a
        first start, this also fixes where the CDR database is read from (cdrrecovery).
        """
        await self.cdr.start()
        if self.journal is None:
            return
        events = await self.journal.load(now)
        finished: list[CompletedCall] = []
        for event in events:
            tracker = self._trackers.get(event.pbx)
            if tracker is not None:
                finished += tracker.feed(event, now)
        if finished:
            await self.record(finished)
        for name, tracker in self._trackers.items():
            if tracker.live_calls():
                tracker.feed(AmiEvent(name, DISCONNECTED_EVENT, {"Reason": "restart"}, now), now)
        log.info("journal.restored", events=len(events), calls_live=self.live_calls(),
                 calls_recorded=len(finished))

    def expire(self, now: float) -> list[CompletedCall]:
        return [call for tracker in self._trackers.values() for call in tracker.expire(now)]

    def next_deadline(self) -> float | None:
        deadlines = [d for t in self._trackers.values() if (d := t.next_deadline()) is not None]
        return min(deadlines, default=None)

    def live_calls(self) -> int:
        return sum(tracker.live_calls() for tracker in self._trackers.values())

    def longest_grace(self) -> float:
        """How far ahead an ended call may still be waiting for late events."""
        return max((max(p.end_grace, p.no_cel_grace) for p in self.cfg.pbx), default=0.0)

    async def _refined(self, calls: list[CompletedCall]) -> list[CompletedCall]:
        """Calls followed across a gap, completed from their CDR rows where there is a CDR
        database (see CallTracker.refine), one query per PBX; the others as they are."""
        holey: dict[str, list[str]] = {}
        for call in calls:
            tracker = self._trackers.get(call.pbx)
            if tracker is not None and tracker.holey(call.linkedid):
                holey.setdefault(call.pbx, []).append(call.linkedid)
        if not holey:
            return calls
        rows: dict[tuple[str, str], list[CdrRow]] = {}
        for pbx, linkedids in holey.items():
            for row in await self.cdr.rows_for(pbx, linkedids):
                rows.setdefault((pbx, row.linkedid), []).append(row)
        return [
            self._trackers[call.pbx].refine(call.linkedid, rows.get((call.pbx, call.linkedid), []))
            or call
            for call in calls
        ]

    async def record(self, calls: Iterable[CompletedCall]) -> None:
        """Plan each call's messages; commit every call with its messages in one transaction."""
        now = self._wall_clock()
        records: list[CallToRecord] = []
        for call in await self._refined(list(calls)):
            planned = plan(call, self.cfg, self._renderer, now=now)
            planned = suppress(planned, await self._policy.suppressed_among(
                [p.to for p in planned]))
            records.append((call, check_number(call.customer_number, self.cfg.phone).e164,
                            planned))
        # One commit for the calls of a consumer pass: a commit (an fsync) per call held the
        # database from the sender (bench/RESULTS.md).
        fresh_flags = await self._store.record_calls(records, now) if records else []
        for (call, e164, recorded), fresh in zip(records, fresh_flags, strict=True):
            if fresh:
                # A later answered call with this customer makes a waiting missed-call text
                # wrong: cancelled before it goes out.
                await self._policy.cancel_for(call, e164, now)
            self.calls_recorded += fresh
            log.info(
                "call.completed", pbx=call.pbx, linkedid=call.linkedid,
                direction=call.direction.value, disposition=call.disposition.value,
                customer=mask_number(call.customer_number), queue=call.queue,
                agent=call.agent_id, end=call.end_reason.value, duplicate=not fresh,
                planned=len([p for p in recorded if p.skip_reason is None]),
                deferred=[f"{p.rule}: {p.wait_reason}" for p in recorded
                          if p.send_at is not None and not p.skip_reason],
                skipped=[f"{p.rule}: {p.skip_reason}" for p in recorded if p.skip_reason],
            )
        if any(fresh_flags):
            self._on_recorded()
        self._trim_due = True


def _cdr_sources(cfg: Config) -> dict[str, SqliteCdrSource]:
    return {pbx.name: SqliteCdrSource(pbx.cdr, cfg.timezone) for pbx in cfg.pbx
            if pbx.cdr is not None}
