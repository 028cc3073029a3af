"""Read-only figures for the report page, `/metrics` and the CSV/JSONL export."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from hangupsms.store import Store


@dataclass(frozen=True, slots=True)
class Satisfaction:
    """Ratings of one agent or queue."""

    name: str
    ratings: int
    average: float


@dataclass(frozen=True, slots=True)
class DailyRow:
    day: str  # YYYY-MM-DD in the configured time zone
    messages: int  # stored (any state)
    sent: int  # accepted by the provider
    delivered: int
    not_delivered: int  # undelivered or failed, by the carrier's receipt
    clicks: int
    opt_outs: int
    ratings: int

    @property
    def delivery_rate(self) -> float | None:
        """Delivered among those the carrier gave a final word on; None without receipts."""
        known = self.delivered + self.not_delivered
        return None if known == 0 else self.delivered / known


@dataclass(frozen=True, slots=True)
class ReportData:
    since: float
    until: float
    days: tuple[DailyRow, ...]
    by_agent: tuple[Satisfaction, ...]
    by_queue: tuple[Satisfaction, ...]
    states: dict[str, int]


async def delivery_counts(store: Store) -> dict[str, int]:
    rows = await store.rows("SELECT delivery, COUNT(*) FROM messages WHERE delivery IS NOT NULL"
                            " GROUP BY delivery")
    return {str(r[0]): int(r[1]) for r in rows}


async def reply_counts(store: Store) -> dict[str, int]:
    rows = await store.rows("SELECT kind, COUNT(*) FROM inbound GROUP BY kind")
    return {str(r[0]): int(r[1]) for r in rows}


async def total_clicks(store: Store) -> int:
    rows = await store.rows("SELECT COUNT(*) FROM clicks")
    return int(rows[0][0])


async def report_data(store: Store, since: float, until: float, timezone: str) -> ReportData:
    """Each day from `since` to `until` (epoch seconds) and the ratings in that span."""
    tz = ZoneInfo(timezone)

    def day(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d")

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    span = (since, until)
    for created, state, delivery in await store.rows(
            "SELECT created_at, state, delivery FROM messages WHERE created_at >= ?"
            " AND created_at < ?", span):
        bucket = counts[day(created)]
        bucket["messages"] += 1
        bucket["sent"] += state == "sent"
        bucket["delivered"] += delivery == "delivered"
        bucket["not_delivered"] += delivery in ("undelivered", "failed")
    for table, column, key, extra in (
        ("clicks", "at", "clicks", ""),
        ("suppression_log", "at", "opt_outs", " AND action = 'add'"),
        ("ratings", "at", "ratings", ""),
    ):
        for (at,) in await store.rows(
                f"SELECT {column} FROM {table} WHERE {column} >= ? AND {column} < ?"  # noqa: S608
                + extra, span):
            counts[day(at)][key] += 1
    days = []
    cursor = datetime.fromtimestamp(since, tz).date()
    last = datetime.fromtimestamp(until, tz).date()
    while cursor <= last:
        c = counts.get(cursor.isoformat(), Counter())
        days.append(DailyRow(cursor.isoformat(), c["messages"], c["sent"], c["delivered"],
                             c["not_delivered"], c["clicks"], c["opt_outs"], c["ratings"]))
        cursor = cursor.fromordinal(cursor.toordinal() + 1)
    states = {str(r[0]): int(r[1]) for r in await store.rows(
        "SELECT state, COUNT(*) FROM messages WHERE created_at >= ? AND created_at < ?"
        " GROUP BY state ORDER BY state", span)}
    return ReportData(since, until, tuple(days), await _satisfaction(store, "agent_id", span),
                      await _satisfaction(store, "queue", span), states)


async def _satisfaction(
    store: Store, column: str, span: tuple[float, float]
) -> tuple[Satisfaction, ...]:
    rows = await store.rows(
        f"SELECT COALESCE({column}, '(none)'), COUNT(*), AVG(score) FROM ratings"  # noqa: S608
        " WHERE at >= ? AND at < ? GROUP BY 1 ORDER BY 1", span)
    return tuple(Satisfaction(str(r[0]), int(r[1]), float(r[2])) for r in rows)
