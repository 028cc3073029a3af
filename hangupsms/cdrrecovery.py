"""Calls whose AMI events were missed, finished or rebuilt from the PBX's CDR database.

Runs at each channel list (`@Channels`: after every login, and on a timer while calls it
is waiting for are still up). Three kinds of call are looked after:

- a call being followed when the link dropped (gone by the reconnect, or still going):
  its CDR rows complete what was seen (who answered, billable seconds) when it finishes
  (`rows_for`, used by the pipeline with CallTracker.refine);
- a call none of whose events arrived (it started and ended while nobody listened, or its
  first events were in flight at a crash): rebuilt from its rows alone;
- a call whose start was missed but which is still up at the reconnect (a channel list
  names it, nobody follows it): remembered, and rebuilt once a channel list no longer
  names it and its CDR rows are there.

Which rows are new is kept as a cursor (the CDR table's rowid) in the database, so a
restart looks at everything written since the previous run's last look; it only passes a
row once that row's call is recorded. On the first run
the cursor starts at the end, before the first login: older CDRs are history, not calls
to text now. A call that
is recorded already, or followed now, is never rebuilt; recording is keyed by Linkedid,
so nothing is texted twice either way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping

import structlog

from hangupsms.calls import CallTracker
from hangupsms.cdrsource import CdrError, SqliteCdrSource
from hangupsms.models import CdrRow, CompletedCall
from hangupsms.store import Store

log = structlog.get_logger(__name__)

_CURSOR_KEY = "cdr_cursor:"
ROWS_WAIT = 60.0  # seconds an ended call's CDR rows are awaited (Asterisk writes them at once)


class CdrRecovery:
    def __init__(self, store: Store, sources: Mapping[str, SqliteCdrSource]) -> None:
        self._store = store
        self._sources = dict(sources)
        self._orphans: dict[str, dict[str, float]] = {name: {} for name in sources}
        self._gone: dict[tuple[str, str], float] = {}  # orphan ended, its rows awaited since

    async def start(self) -> None:
        """Before the first login: a PBX seen for the first time starts at the CDRs' end.

        Set before any event is taken, so a call that ends after this start is never
        mistaken for history, even if the daemon dies before it saw the call's events.
        """
        for pbx, source in self._sources.items():
            if await self._cursor(pbx) is not None:
                continue
            try:
                await self._set_cursor(pbx, await source.latest_rowid())
            except CdrError as exc:
                log.warning("cdr.unreadable", pbx=pbx, error=str(exc),
                            effect="missed calls are looked for once it can be read")

    def covers(self, pbx: str) -> bool:
        return pbx in self._sources

    def waiting(self, pbx: str) -> int:
        """Calls of `pbx` still up whose start was missed (a channel list is due for them)."""
        return len(self._orphans.get(pbx, {}))

    async def rows_for(self, pbx: str, linkedids: Collection[str]) -> list[CdrRow]:
        """The CDR rows of these calls; none without a CDR database or when it is unreadable."""
        source = self._sources.get(pbx)
        if source is None:
            return []
        try:
            return await source.rows_for(linkedids)
        except CdrError as exc:
            log.warning("cdr.unreadable", pbx=pbx, error=str(exc),
                        effect="a call followed across a gap keeps what was seen")
            return []

    async def missed_calls(self, tracker: CallTracker, live: Collection[str],
                           now: float) -> list[CompletedCall]:
        """After a channel list was fed: rebuild the calls nobody saw, from their CDR rows."""
        source = self._sources.get(tracker.pbx)
        if source is None:
            return []
        try:
            return await self._missed(tracker, source, set(live), now)
        except CdrError as exc:
            log.warning("cdr.unreadable", pbx=tracker.pbx, error=str(exc),
                        effect="calls missed entirely are not recovered")
            return []

    async def _missed(self, tracker: CallTracker, source: SqliteCdrSource, live: set[str],
                      now: float) -> list[CompletedCall]:
        pbx = tracker.pbx
        cursor = await self._cursor(pbx)
        latest = await source.latest_rowid()
        if cursor is None:
            await self._set_cursor(pbx, latest)
            return []
        orphans = self._orphans[pbx]
        new_rows = await source.rows_after(cursor) if latest > cursor else []
        # A call up now that nobody follows lost its first events: it is looked after until
        # it ends, CDR rows or not yet (they are written as its legs end).
        candidates = ({row.linkedid for row in new_rows} | set(orphans) | live) - {""}
        recorded = await self._recorded(pbx, candidates)
        candidates = {c for c in candidates if not tracker.knows(c)} - recorded
        for linkedid in candidates & live:
            orphans.setdefault(linkedid, now)
        ended = candidates - live
        grouped: dict[str, list[CdrRow]] = defaultdict(list)
        for row in await source.rows_for(ended) if ended else []:
            grouped[row.linkedid].append(row)
        calls: list[CompletedCall] = []
        for linkedid in sorted(ended):
            rows = grouped.get(linkedid, [])
            if not rows and self._rows_may_come(pbx, linkedid, now):
                continue  # gone from the channel list, its CDR not written yet
            orphans.pop(linkedid, None)
            self._gone.pop((pbx, linkedid), None)
            call = tracker.from_cdr(linkedid, rows, now)
            if call is not None:
                calls.append(call)
        self._forget_stale(pbx, now, tracker.settings.call_ttl)
        # The cursor passes a row only once its call is recorded: a call followed now (or
        # rebuilt now) may still die with this process, unrecorded and unjournaled.
        unrecorded = [row.rowid for row in new_rows
                      if row.linkedid and row.linkedid not in recorded]
        settled = min(unrecorded) - 1 if unrecorded else latest
        if settled > cursor:
            await self._set_cursor(pbx, settled)
        if calls or orphans:
            log.warning("cdr.missed_calls", pbx=pbx, rebuilt=len(calls), still_up=len(orphans))
        return calls

    def _rows_may_come(self, pbx: str, linkedid: str, now: float) -> bool:
        """An ended call without CDR rows: wait for them a while, then give it up, loudly."""
        if linkedid not in self._orphans[pbx]:
            return False
        since = self._gone.setdefault((pbx, linkedid), now)
        if now - since < ROWS_WAIT:
            return True
        del self._orphans[pbx][linkedid]
        del self._gone[(pbx, linkedid)]
        log.warning("cdr.no_rows", pbx=pbx, linkedid=linkedid, waited=ROWS_WAIT,
                    effect="the call ended unseen and has no CDR: not texted")
        return True

    def _forget_stale(self, pbx: str, now: float, ttl: float) -> None:
        orphans = self._orphans[pbx]
        for linkedid, since in list(orphans.items()):
            if now - since > ttl:
                del orphans[linkedid]
                log.warning("cdr.orphan_given_up", pbx=pbx, linkedid=linkedid)

    async def _recorded(self, pbx: str, linkedids: Collection[str]) -> set[str]:
        wanted = sorted(linkedids)
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            marks = ", ".join("?" * len(part))
            rows = await self._store.rows(
                f"SELECT linkedid FROM calls WHERE pbx = ? AND linkedid IN ({marks})",  # noqa: S608
                (pbx, *part))
            found.update(str(row[0]) for row in rows)
        return found

    async def _cursor(self, pbx: str) -> int | None:
        rows = await self._store.rows("SELECT value FROM meta WHERE key = ?",
                                      (_CURSOR_KEY + pbx,))
        return int(rows[0][0]) if rows else None

    async def _set_cursor(self, pbx: str, rowid: int) -> None:
        async with self._store.transaction() as db:
            await db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
                             " DO UPDATE SET value = excluded.value",
                             (_CURSOR_KEY + pbx, str(rowid)))
