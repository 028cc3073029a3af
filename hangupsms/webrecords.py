"""Retention and erasure of what the web side recorded (receipts, replies, links, clicks)."""

from __future__ import annotations

import aiosqlite


async def forget_calls(db: aiosqlite.Connection, call_ids: list[int]) -> None:
    """Retention: the receipts, replies, ratings, links and clicks of calls being deleted."""
    for call_id in call_ids:
        for table in ("links", "held_coupons"):
            await db.execute(f"DELETE FROM {table} WHERE message_id IN"  # noqa: S608
                             " (SELECT id FROM messages WHERE call_id = ?)", (call_id,))
        for table in ("receipts", "clicks", "ratings", "inbound"):
            await db.execute(f"DELETE FROM {table} WHERE call_id = ?", (call_id,))  # noqa: S608


async def erase_in(db: aiosqlite.Connection, numbers: list[str], message_ids: set[int],
                   erased: str) -> None:
    """`erase`: replies from the number go; ratings and clicks stay, without the number.

    Links of its messages go too (their URL may carry the person's data): they then 404.
    """
    for number in numbers:
        await db.execute("DELETE FROM inbound WHERE from_number = ?", (number,))
        await db.execute("UPDATE ratings SET customer = ? WHERE customer = ?", (erased, number))
        await db.execute("UPDATE clicks SET customer = ? WHERE customer = ?", (erased, number))
    for message_id in message_ids:
        await db.execute("DELETE FROM links WHERE message_id = ?", (message_id,))
        await db.execute("DELETE FROM held_coupons WHERE message_id = ?", (message_id,))
        await db.execute("UPDATE receipts SET provider_id = '' WHERE message_id = ?",
                         (message_id,))
