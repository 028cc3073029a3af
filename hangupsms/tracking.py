"""Tracked links and coupon codes, bound to their message in the transaction that stores it.

The renderer cannot do this: it runs before the message row exists. It gives each `link()`
a fresh token and each `coupon()` a marker; here, inside `Store.record_call`'s transaction,
the tokens are stored against the message id and each marker becomes the next unused code
of its pool. A pool with no code left holds the message (`held`): it is never sent
without its code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiosqlite

from hangupsms.models import MessageState, PlannedMessage, RenderedText
from hangupsms.render import measure, shown_text

if TYPE_CHECKING:
    from hangupsms.store import Store


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """What a tracked link's token leads to."""

    token: str
    url: str
    tag: str
    message_id: int
    call_id: int
    customer: str  # the number the message went to


async def bind_extras(
    db: aiosqlite.Connection, call_id: int, planned: Sequence[PlannedMessage], now: float
) -> None:
    """Store the links and take the coupon codes of `planned` (already inserted)."""
    for message in planned:
        body = message.body
        if body is None or not (body.links or body.coupons):
            continue
        async with db.execute(
            "SELECT id FROM messages WHERE call_id = ? AND rule = ? AND to_number = ?",
            (call_id, message.rule, message.to),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:  # never expected: the row was inserted in this transaction
            raise RuntimeError(f"message {message.rule} of call {call_id} is missing")
        message_id = int(row[0])
        await db.executemany(
            "INSERT INTO links (token, message_id, url, tag, created_at) VALUES (?,?,?,?,?)",
            [(link.token, message_id, link.url, link.tag, now) for link in body.links],
        )
        if body.coupons:
            await _bind_coupons(db, message_id, body, sendable=message.skip_reason is None,
                                now=now)


async def _bind_coupons(
    db: aiosqlite.Connection, message_id: int, body: RenderedText, *, sendable: bool, now: float
) -> None:
    text = body.text
    empty: str | None = None
    if sendable:
        for slot in body.coupons:
            code = await _take(db, slot.pool, message_id, now)
            if code is None:
                empty = slot.pool
                break
            text = text.replace(slot.marker, code)
    if empty is not None or not sendable:
        # Codes already taken for this message go back: it will not be sent with them.
        await db.execute("UPDATE coupons SET message_id = NULL, used_at = NULL"
                         " WHERE message_id = ?", (message_id,))
        text = shown_text(body)
    measured = measure(text)
    if empty is not None:
        await db.execute(
            "UPDATE messages SET state = ?, reason = ?, body = ?, encoding = ?, segments = ?"
            " WHERE id = ?",
            (MessageState.HELD.value, f"coupon pool '{empty}' is empty", text,
             measured.encoding.value, measured.segments, message_id),
        )
        # Kept with its markers, so that `coupons load` can still send it with its codes.
        slots = json.dumps([[slot.marker, slot.pool] for slot in body.coupons])
        await db.execute("INSERT INTO held_coupons (message_id, text, slots) VALUES (?,?,?)",
                         (message_id, body.text, slots))
        return
    await db.execute("UPDATE messages SET body = ?, encoding = ?, segments = ? WHERE id = ?",
                     (text, measured.encoding.value, measured.segments, message_id))


async def _take(db: aiosqlite.Connection, pool: str, message_id: int, now: float) -> str | None:
    async with db.execute(
        "UPDATE coupons SET message_id = ?, used_at = ? WHERE id = (SELECT id FROM coupons"
        " WHERE pool = ? AND message_id IS NULL AND used_at IS NULL ORDER BY id LIMIT 1)"
        " RETURNING code",
        (message_id, now, pool),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def load_coupons(store: Store, pool: str, codes: Iterable[str], now: float) -> int:
    """Add codes to `pool`; a code the pool ever held is not added again. Returns the new."""
    async with store.transaction() as db:
        added = 0
        for code in codes:
            async with db.execute(
                "INSERT OR IGNORE INTO coupons (pool, code, loaded_at) VALUES (?,?,?)",
                (pool, code, now),
            ) as cursor:
                added += cursor.rowcount
        return added


async def release_held(store: Store, now: float) -> int:
    """Send the held messages whose pools now have codes: each gets its codes, `pending`.

    A message still short of a code stays held. The sender's `max_age` still applies.
    """
    released = 0
    async with store.transaction() as db:
        async with db.execute(
            "SELECT h.message_id, h.text, h.slots FROM held_coupons h JOIN messages m"
            " ON m.id = h.message_id WHERE m.state = 'held' ORDER BY h.message_id",
        ) as cursor:
            held = list(await cursor.fetchall())
        for message_id, text, slots in held:
            pools = [pool for _, pool in json.loads(slots)]
            for marker, pool in json.loads(slots):
                code = await _take(db, pool, message_id, now)
                if code is None:
                    await db.execute("UPDATE coupons SET message_id = NULL, used_at = NULL"
                                     " WHERE message_id = ?", (message_id,))
                    break
                text = text.replace(marker, code)
            else:
                measured = measure(text)
                await db.execute(
                    "UPDATE messages SET state = 'pending', reason = NULL, body = ?,"
                    " encoding = ?, segments = ?, send_at = ?, updated_at = ? WHERE id = ?",
                    (text, measured.encoding.value, measured.segments, now, now, message_id))
                await db.execute("DELETE FROM held_coupons WHERE message_id = ?", (message_id,))
                await db.execute(
                    "INSERT INTO attempts (message_id, at, outcome, detail) VALUES (?,?,?,?)",
                    (message_id, now, "coupon_codes",
                     "codes taken from pool " + ", ".join(sorted(set(pools)))))
                released += 1
    return released


async def coupon_counts(store: Store) -> dict[str, tuple[int, int]]:
    """Each pool's (unused, used) codes."""
    rows = await store.rows(
        "SELECT pool, SUM(message_id IS NULL AND used_at IS NULL), COUNT(*) FROM coupons"
        " GROUP BY pool ORDER BY pool")
    return {str(r[0]): (int(r[1]), int(r[2]) - int(r[1])) for r in rows}


async def follow(store: Store, token: str, now: float) -> LinkTarget | None:
    """The target of `token`, the click recorded; None for a token that does not exist."""
    async with store.transaction() as db:
        async with db.execute(
            "SELECT l.url, l.tag, l.message_id, m.call_id, m.to_number FROM links l"
            " JOIN messages m ON m.id = l.message_id WHERE l.token = ?", (token,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        target = LinkTarget(token, str(row[0]), str(row[1]), int(row[2]), int(row[3]),
                            str(row[4]))
        await db.execute(
            "INSERT INTO clicks (token, message_id, call_id, customer, tag, at)"
            " VALUES (?,?,?,?,?,?)",
            (token, target.message_id, target.call_id, target.customer, target.tag, now),
        )
    return target
