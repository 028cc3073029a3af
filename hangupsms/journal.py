"""The intake journal: the events of calls still going, kept on disk so a restart resumes them.

Asterisk sends each event once. Without a journal, a restart (or a crash, or a deploy)
forgets every call in progress, and those callers never get their text. The consumer
appends each event the tracker uses, in batches; on start the daemon feeds the journal
back to a fresh tracker. Rows older than the oldest call still live are trimmed.
A call recorded before a crash and replayed from the journal is recorded once: the
store's (pbx, linkedid) key is unique.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hangupsms.models import AmiEvent
from hangupsms.store import Store


@dataclass(slots=True)
class _PbxMarks:
    """Where each live call's events start in the journal (to know what may be trimmed)."""

    first_id: dict[str, int] = field(default_factory=dict)  # Linkedid -> first journal id
    last_id: int = 0  # the newest row written for this PBX
    trimmed_below: int = 0


class Journal:
    """Buffers events, writes them in one transaction per flush, trims behind the live calls."""

    def __init__(self, store: Store, *, batch: int = 500) -> None:
        self._store = store
        self._batch = batch
        self._pending: list[AmiEvent] = []
        self._marks: dict[str, _PbxMarks] = {}
        self.written = 0

    def add(self, event: AmiEvent) -> None:
        self._pending.append(event)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self._batch

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write the buffered events durably, in order."""
        if not self._pending:
            return
        events, self._pending = self._pending, []
        rows = [(e.pbx, e.name, json.dumps(dict(e.headers), ensure_ascii=False)) for e in events]
        async with self._store.transaction() as db:
            await db.executemany("INSERT INTO journal (pbx, name, headers) VALUES (?,?,?)", rows)
            async with db.execute("SELECT last_insert_rowid()") as cursor:
                row = await cursor.fetchone()
        last = int(row[0]) if row is not None else 0
        self._remember(events, last - len(events) + 1)
        self.written += len(events)

    def _remember(self, events: Iterable[AmiEvent], first: int) -> None:
        # One writer inside one transaction: the ids of an executemany are consecutive.
        for offset, event in enumerate(events):
            marks = self._marks.setdefault(event.pbx, _PbxMarks())
            marks.last_id = first + offset
            if marks.last_id < marks.trimmed_below:
                # The table was emptied and SQLite reuses ids (INTEGER PRIMARY KEY): the old
                # mark would hold back every trim until the ids pass it again.
                marks.trimmed_below = 0
            linkedid = event.headers.get("Linkedid") or event.headers.get("LinkedID")
            if linkedid:
                marks.first_id.setdefault(linkedid, first + offset)

    async def trim(self, pbx: str, live: Sequence[str]) -> None:
        """Drop `pbx`'s rows older than its oldest live call (`live` is oldest first)."""
        marks = self._marks.get(pbx)
        if marks is None:
            return
        if not live:
            keep_from = marks.last_id + 1
            marks.first_id.clear()
        else:
            keep_from = marks.first_id.get(live[0], marks.trimmed_below)
            marks.first_id = {k: marks.first_id[k] for k in live if k in marks.first_id}
        if keep_from <= marks.trimmed_below:
            return
        async with self._store.transaction() as db:
            await db.execute("DELETE FROM journal WHERE pbx = ? AND id < ?", (pbx, keep_from))
        marks.trimmed_below = keep_from

    async def load(self, now: float) -> list[AmiEvent]:
        """Every journaled event, oldest first, as received at `now` (for a fresh tracker)."""
        rows = await self._store.rows("SELECT id, pbx, name, headers FROM journal ORDER BY id")
        events: list[AmiEvent] = []
        for row in rows:
            event = AmiEvent(row["pbx"], row["name"], json.loads(row["headers"]), now)
            events.append(event)
            self._remember([event], int(row["id"]))
        return events
