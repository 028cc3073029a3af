"""The suppression list: numbers that must never be texted, whatever rule matches.

Numbers are stored in E.164. Every change is also appended to `suppression_log` (who, why,
when), the evidence a compliance question asks for. After `hangupsms erase`, a suppressed
number is kept only as a keyed hash (`erased:<hex>`, the key is random per database), so
the person stays opted out without the database holding their number.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiosqlite

from hangupsms.store import Store

ERASED_PREFIX = "erased:"
_KEY_NAME = "suppression_key"


@dataclass(frozen=True, slots=True)
class Suppression:
    number: str
    reason: str
    source: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: int
    already: int
    rejected: tuple[tuple[int, str, str], ...]  # (line, value, why) for each unreadable line


class SuppressionList:
    """The `suppressions` table of a Store; numbers must already be E.164."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._key: bytes | None = None

    async def add(self, number: str, *, reason: str, source: str, now: float) -> bool:
        """Suppress `number`; False when it already was (its first reason is kept)."""
        async with self._store.transaction() as db:
            return await _add(db, number, reason, source, now)

    async def add_many(
        self, numbers: Iterable[str], *, reason: str, source: str, now: float
    ) -> int:
        """Suppress each number in one transaction; returns how many were new."""
        async with self._store.transaction() as db:
            added = 0
            for number in numbers:
                added += await _add(db, number, reason, source, now)
            return added

    async def remove(self, number: str, *, reason: str, source: str, now: float) -> bool:
        """Lift the suppression of `number`; False when it was not suppressed."""
        async with self._store.transaction() as db:
            return await unsuppress_in(db, number, reason=reason, source=source, now=now)

    async def contains(self, number: str) -> bool:
        forms = [number, await self._erased_form(number)]
        rows = await self._store.rows(
            "SELECT 1 FROM suppressions WHERE number IN (?, ?) LIMIT 1", forms)
        return bool(rows)

    async def suppressed_among(self, numbers: Sequence[str]) -> frozenset[str]:
        """Which of `numbers` are suppressed (the sender's check for a whole batch)."""
        found: set[str] = set()
        for number in set(numbers):
            if await self.contains(number):
                found.add(number)
        return frozenset(found)

    async def entries(self) -> list[Suppression]:
        rows = await self._store.rows("SELECT number, reason, source, created_at"
                                      " FROM suppressions ORDER BY created_at, number")
        return [Suppression(r[0], r[1], r[2], r[3]) for r in rows]

    async def erase(self, number: str) -> bool:
        """Replace `number` by its keyed hash (see the module doc); True when it was listed."""
        hashed = await self._erased_form(number)
        async with self._store.transaction() as db:
            async with db.execute(
                "UPDATE OR REPLACE suppressions SET number = ? WHERE number = ?", (hashed, number)
            ) as cur:
                changed = cur.rowcount > 0
            await db.execute("UPDATE suppression_log SET number = ? WHERE number = ?",
                             (hashed, number))
            return changed

    async def _erased_form(self, number: str) -> str:
        if self._key is None:
            rows = await self._store.rows("SELECT value FROM meta WHERE key = ?", (_KEY_NAME,))
            self._key = bytes.fromhex(str(rows[0][0]))
        return ERASED_PREFIX + hmac.new(self._key, number.encode(), hashlib.sha256).hexdigest()


async def suppress_in(db: aiosqlite.Connection, number: str, *, reason: str, source: str,
                      now: float) -> bool:
    """`SuppressionList.add` inside a transaction the caller holds (an inbound STOP)."""
    return await _add(db, number, reason, source, now)


async def unsuppress_in(db: aiosqlite.Connection, number: str, *, reason: str, source: str,
                        now: float) -> bool:
    """`SuppressionList.remove` inside a transaction the caller holds (an inbound START)."""
    async with db.execute("DELETE FROM suppressions WHERE number = ?", (number,)) as cur:
        removed = cur.rowcount > 0
    if removed:
        await _log(db, number, "remove", reason, source, now)
    return removed


async def _add(db: aiosqlite.Connection, number: str, reason: str, source: str,
               now: float) -> bool:
    async with db.execute(
        "INSERT OR IGNORE INTO suppressions (number, reason, source, created_at)"
        " VALUES (?, ?, ?, ?)", (number, reason, source, now)
    ) as cur:
        added = cur.rowcount > 0
    if added:
        await _log(db, number, "add", reason, source, now)
    return added


async def _log(db: aiosqlite.Connection, number: str, action: str, reason: str, source: str,
               now: float) -> None:
    await db.execute(
        "INSERT INTO suppression_log (number, action, reason, source, at) VALUES (?, ?, ?, ?, ?)",
        (number, action, reason, source, now))


def read_numbers(text: str) -> list[tuple[int, str]]:
    """(line, value) of each number in an import file: one per line, or the first CSV column.

    Blank lines and lines starting with `#` are ignored, and so is a first line whose first
    column holds no digit (a CSV header such as `number,reason`).
    """
    found: list[tuple[int, str]] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        value = row[0].strip() if row else ""
        if not value or value.startswith("#"):
            continue
        if line_no == 1 and not any(ch.isdigit() for ch in value):
            continue
        found.append((line_no, value))
    return found
