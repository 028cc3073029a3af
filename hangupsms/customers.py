"""What we know of a customer, for a CRM: tags derived from calls, clicks, ratings, coupons.

Tags are derived when asked, from the records themselves: they can never disagree with
them, and `erase` or retention removing a record removes what it implied.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from hangupsms.store import Store


@dataclass(frozen=True, slots=True)
class Customer:
    number: str  # E.164
    name: str  # the latest caller-ID name seen
    calls: int
    first_call: float | None
    last_call: float | None
    messages_sent: int
    clicks: int
    ratings: tuple[int, ...]  # oldest first
    tags: tuple[str, ...]  # sorted
    suppressed: bool


async def customer(store: Store, number: str) -> Customer | None:
    """Everything recorded about `number`, or None when nothing is."""
    found = await customers(store, [number])
    return found[0] if found else None


async def active_since(store: Store, since: float) -> list[str]:
    """Customers with a call, a reply or a click at or after `since`."""
    rows = await store.rows(
        "SELECT customer_e164 FROM calls WHERE ended_at >= ? AND customer_e164 IS NOT NULL"
        " UNION SELECT from_number FROM inbound WHERE received_at >= ?"
        # An erased customer's clicks stay (counted), under a marker that is no number.
        " UNION SELECT customer FROM clicks WHERE at >= ? AND customer GLOB '+*' ORDER BY 1",
        (since, since, since))
    return [str(row[0]) for row in rows]


async def customers(store: Store, numbers: Iterable[str]) -> list[Customer]:
    out: list[Customer] = []
    for number in numbers:
        tags: set[str] = set()
        calls = await store.rows(
            "SELECT customer_name, queue, did, disposition, direction, ended_at FROM calls"
            " WHERE customer_e164 = ? ORDER BY ended_at", (number,))
        for _, queue, did, disposition, direction, _ in calls:
            tags.update(_call_tags(queue, did, disposition, direction))
        clicks = await store.rows("SELECT l.url, c.tag FROM clicks c JOIN links l"
                                  " ON l.token = c.token WHERE c.customer = ?", (number,))
        tags.update(f"clicked:{tag or urlsplit(url).hostname or 'link'}" for url, tag in clicks)
        ratings = [int(r[0]) for r in await store.rows(
            "SELECT score FROM ratings WHERE customer = ? ORDER BY at, id", (number,))]
        tags.update(f"rated:{score}" for score in ratings)
        pools = await store.rows("SELECT DISTINCT k.pool FROM coupons k JOIN messages m"
                                 " ON m.id = k.message_id WHERE m.to_number = ?"
                                 " AND m.state = 'sent'", (number,))
        tags.update(f"coupon:{pool}" for (pool,) in pools)
        sent = await store.rows("SELECT COUNT(*) FROM messages WHERE to_number = ?"
                                " AND state = 'sent'", (number,))
        suppressed = bool(await store.rows("SELECT 1 FROM suppressions WHERE number = ?",
                                           (number,)))
        if suppressed:
            tags.add("opted-out")
        if not (calls or clicks or ratings or suppressed or sent[0][0]):
            continue
        out.append(Customer(
            number=number, name=str(calls[-1][0]) if calls else "", calls=len(calls),
            first_call=float(calls[0][5]) if calls else None,
            last_call=float(calls[-1][5]) if calls else None,
            messages_sent=int(sent[0][0]), clicks=len(clicks), ratings=tuple(ratings),
            tags=tuple(sorted(tags)), suppressed=suppressed))
    return out


def _call_tags(queue: str | None, did: str | None, disposition: str,
               direction: str) -> list[str]:
    tags = [f"direction:{direction}", "answered" if disposition == "answered" else "missed"]
    if queue:
        tags.append(f"queue:{queue}")
    if did:
        tags.append(f"did:{did}")
    return tags
