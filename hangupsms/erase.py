"""`hangupsms erase NUMBER`: a person's number, name and texts gone from every table and page.

Calls from the number are kept for the statistics but pseudonymised (number, name, call
variables and the facts record blanked); messages to or about it lose their recipient,
text and provider answers; journal rows that mention it are deleted; a suppression of it is kept
only as a keyed hash (see `suppression`). SQLite is told to
zero freed pages (`secure_delete`), the WAL is checkpointed and truncated and the file
is rebuilt (`VACUUM`), so the number is not left in free pages or the write-ahead log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import aiosqlite

from hangupsms.store import Store
from hangupsms.suppression import SuppressionList
from hangupsms.webrecords import erase_in

ERASED = "erased"


@dataclass(frozen=True, slots=True)
class Erasure:
    calls: int
    messages: int
    journal_rows: int


async def erase_number(store: Store, forms: Iterable[str]) -> Erasure:
    """Erase every trace of a number given in its `forms` (E.164, as Asterisk wrote it…)."""
    numbers = sorted({form for form in forms if form})
    if not numbers:
        raise ValueError("no number to erase")
    await store.execute_outside_transaction("PRAGMA secure_delete = ON")
    async with store.transaction() as db:
        call_ids: set[int] = set()
        message_ids: set[int] = set()
        for number in numbers:
            call_ids |= await _ids(db, "SELECT id FROM calls WHERE customer_number = ?"
                                   " OR customer_e164 = ?", (number, number))
            message_ids |= await _ids(db, "SELECT id FROM messages WHERE to_number = ?",
                                      (number,))
        for call_id in call_ids:
            message_ids |= await _ids(db, "SELECT id FROM messages WHERE call_id = ?",
                                      (call_id,))
        blank = json.dumps({"erased": True})
        await db.executemany(
            "UPDATE calls SET customer_number = ?, customer_e164 = NULL, customer_name = '',"
            " variables = '{}', facts = ? WHERE id = ?",
            [(ERASED, blank, call_id) for call_id in call_ids])
        await db.executemany(
            "UPDATE messages SET to_number = ? || '-' || id, body = NULL, reason = NULL,"
            " provider_id = NULL WHERE id = ?", [(ERASED, m) for m in message_ids])
        await db.executemany("UPDATE attempts SET detail = '' WHERE message_id = ?",
                             [(m,) for m in message_ids])
        journal = await _erase_journal(db, numbers)
        await erase_in(db, numbers, message_ids, ERASED)
    suppressions = SuppressionList(store)
    for number in numbers:
        # Kept as a keyed hash: an erased person who said STOP must stay unreachable.
        await suppressions.erase(number)
    await store.execute_outside_transaction("PRAGMA wal_checkpoint(TRUNCATE)")
    await store.execute_outside_transaction("VACUUM")
    await store.execute_outside_transaction("PRAGMA wal_checkpoint(TRUNCATE)")
    return Erasure(len(call_ids), len(message_ids), journal)


async def _ids(db: aiosqlite.Connection, sql: str, params: tuple[object, ...]) -> set[int]:
    async with db.execute(sql, params) as cursor:
        return {int(row[0]) for row in await cursor.fetchall()}


async def _erase_journal(db: aiosqlite.Connection, numbers: list[str]) -> int:
    """Delete journal rows (raw AMI headers) that contain any form of the number."""
    deleted = 0
    for number in numbers:
        async with db.execute(
            "DELETE FROM journal WHERE instr(headers, ?) > 0", (number,)
        ) as cursor:
            deleted += cursor.rowcount
    return deleted
