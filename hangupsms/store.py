"""SQLite storage: calls, the message outbox and send attempts; versioned migrations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from hangupsms.models import CompletedCall, MessageState, OutboundMessage, PlannedMessage
from hangupsms.schema import MIGRATIONS, SCHEMA_VERSION
from hangupsms.tracking import bind_extras
from hangupsms.webrecords import forget_calls

log = structlog.get_logger(__name__)


class StoreError(Exception):
    """The database cannot be used (newer schema than this code, unwritable file, …)."""


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message as `history` shows it, joined with its call."""

    id: int
    pbx: str
    linkedid: str
    rule: str
    to_number: str
    provider: str
    body: str | None
    state: str
    reason: str | None
    provider_id: str | None
    error_code: str | None
    attempts: int
    created_at: float
    updated_at: float
    delivery: str | None = None  # the carrier's final status (delivery receipts)


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One recorded outcome of a message: a send attempt or a provider lookup."""

    at: float
    outcome: str
    error_code: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class LookupClaim:
    """An `unknown` message claimed for a provider lookup (now in state `checking`)."""

    message: OutboundMessage
    attempt_started_at: float  # the lookup searches the provider's records from here
    settle_from: float  # a "not found" proves nothing until the provider's records settle
    lookups: int  # inconclusive lookups so far


# A finished call, its customer's number in E.164 (None: not a valid number), its messages.
CallToRecord = tuple[CompletedCall, str | None, Sequence[PlannedMessage]]

_INTERRUPTED = "interrupted while sending; the provider is checked before any resend"


class Store:
    """One SQLite file in WAL mode; the daemon writes, the CLI may read at the same time."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection serves several tasks (consumer, sender): one transaction at a time.
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error, serialised across tasks."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    @classmethod
    async def open(cls, path: Path, *, readonly: bool = False) -> Store:
        """Open (creating and migrating unless `readonly`) the database at `path`."""
        if readonly and not await asyncio.to_thread(path.is_file):
            # Checked here: aiosqlite's own failure path can outlive the event loop.
            raise StoreError(f"no database at {path} (has the daemon run with this config?)")
        try:
            if readonly:
                db = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = await aiosqlite.connect(path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        db.row_factory = sqlite3.Row
        store = cls(db, path)
        try:
            await store._configure(readonly)
        except BaseException:
            await db.close()
            raise
        return store

    async def _configure(self, readonly: bool) -> None:
        db = self._db
        await db.execute("PRAGMA busy_timeout = 5000")
        await db.execute("PRAGMA foreign_keys = ON")
        version = await self._scalar("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this "
                f"hangupsms ({SCHEMA_VERSION}); upgrade hangupsms or use another file"
            )
        if readonly:
            if version < SCHEMA_VERSION:
                raise StoreError(f"database {self.path} is not initialised (run the daemon once)")
            return
        await db.execute("PRAGMA journal_mode = WAL")
        # The outbox promise (nothing lost) needs every commit on disk before we send.
        await db.execute("PRAGMA synchronous = FULL")
        for index in range(version, SCHEMA_VERSION):
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[index]):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {index + 1}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        await self._db.close()

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def record_call(
        self, call: CompletedCall, customer_e164: str | None, planned: Sequence[PlannedMessage],
        now: float,
    ) -> bool:
        """Store a call and its planned messages in ONE transaction; False if already recorded.

        Messages that can be sent are `pending` (due now) or `deferred` (due at their
        `send_at`); the others are `skipped` with their reason. A replayed call changes
        nothing: (pbx, linkedid) and (call, rule, recipient) are unique.
        """
        return (await self.record_calls([(call, customer_e164, planned)], now))[0]

    async def record_calls(self, calls: Sequence[CallToRecord], now: float) -> list[bool]:
        """`record_call` for several calls in one transaction (one commit, one fsync)."""
        async with self.transaction() as db:
            return [await _insert_call(db, call, e164, planned, now)
                    for call, e164, planned in calls]

    async def claim_due(self, now: float, limit: int = 50) -> list[OutboundMessage]:
        """Move due `pending` and `deferred` messages to `sending` (oldest first), return them.

        A deferred message's max_age counts from when it was first due, not stored.
        """
        async with self.transaction() as db:
            async with db.execute(
                "UPDATE messages SET state = 'sending', attempts = attempts + 1,"
                " attempt_started_at = ?, settle_from = NULL, lookups = 0, updated_at = ?,"
                " request_started_at = 0"
                " WHERE id IN (SELECT id FROM messages WHERE state IN ('pending', 'deferred')"
                " AND send_at <= ? ORDER BY send_at, id LIMIT ?)"
                " RETURNING id, to_number, body, provider, call_id, rule, attempts,"
                " COALESCE(due_from, created_at) AS created_at, fallbacks, attempts_before",
                (now, now, now, limit),
            ) as cursor:
                rows = list(await cursor.fetchall())
            calls = await self._call_keys([row["call_id"] for row in rows])
        rows.sort(key=lambda row: int(row["id"]))
        return [_outbound(row, calls) for row in rows]

    async def claim_unknown_due(self, now: float, limit: int = 50) -> list[LookupClaim]:
        """Move `unknown` messages whose lookup is due to `checking` (oldest first)."""
        async with self.transaction() as db:
            async with db.execute(
                "UPDATE messages SET state = 'checking', updated_at = ? WHERE id IN"
                " (SELECT id FROM messages WHERE state = 'unknown' AND settle_from IS NOT NULL"
                " AND send_at <= ? ORDER BY send_at, id LIMIT ?)"
                " RETURNING id, to_number, body, provider, call_id, rule, attempts,"
                " COALESCE(due_from, created_at) AS created_at, attempt_started_at,"
                " settle_from, lookups, fallbacks, attempts_before",
                (now, now, limit),
            ) as cursor:
                rows = list(await cursor.fetchall())
            calls = await self._call_keys([row["call_id"] for row in rows])
        rows.sort(key=lambda row: int(row["id"]))
        return [
            LookupClaim(
                message=_outbound(row, calls),
                # A row without a claim time (never expected) searches from its creation.
                attempt_started_at=float(row["attempt_started_at"] or row["created_at"]),
                settle_from=float(row["settle_from"]), lookups=int(row["lookups"]),
            )
            for row in rows
        ]

    async def _call_keys(self, call_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        if not call_ids:
            return {}
        marks = ",".join("?" * len(call_ids))
        async with self._db.execute(
            f"SELECT id, pbx, linkedid FROM calls WHERE id IN ({marks})",  # noqa: S608
            list(call_ids),
        ) as cursor:
            return {row["id"]: (row["pbx"], row["linkedid"]) for row in await cursor.fetchall()}

    async def finish(
        self, message_id: int, state: MessageState, now: float, *,
        outcome: str, reason: str | None = None, provider_id: str | None = None,
        error_code: str | None = None, send_at: float | None = None,
    ) -> None:
        """Record one attempt's outcome and move the message to `state` in one transaction."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE messages SET state = ?, reason = ?, provider_id = COALESCE(?, provider_id),"
                " error_code = ?, send_at = COALESCE(?, send_at), updated_at = ? WHERE id = ?",
                (state.value, reason, provider_id, error_code, send_at, now, message_id),
            )
            await db.execute(
                "INSERT INTO attempts (message_id, at, outcome, error_code, detail)"
                " VALUES (?,?,?,?,?)",
                (message_id, now, outcome, error_code, reason or ""),
            )

    async def mark_unknown(
        self, message_id: int, now: float, *, outcome: str, lookup_at: float,
        reason: str | None = None, error_code: str | None = None,
    ) -> bool:
        """A send may have reached the provider: `unknown`, with a lookup due at `lookup_at`.

        False (nothing written) when the message was not `sending`.
        """
        return await self._transition(
            message_id, now, "sending",
            "state = 'unknown', reason = ?, error_code = ?, send_at = ?, settle_from = ?,"
            " lookups = 0",
            (reason, error_code, lookup_at, now), outcome=outcome, error_code=error_code,
            detail=reason,
        )

    async def fail_over(
        self, message: OutboundMessage, now: float, *, from_state: MessageState, outcome: str,
        reason: str, error_code: str | None = None,
    ) -> bool:
        """Hand `message` to its next provider, due now, with a fresh retry budget.

        False (nothing written) when it has no next provider or was not in `from_state`.
        """
        if not message.fallbacks:
            return False
        following, *rest = message.fallbacks
        return await self._transition(
            message.id, now, from_state.value,
            "state = 'pending', provider = ?, fallbacks = ?, attempts_before = attempts,"
            " reason = ?, error_code = ?, send_at = ?, settle_from = NULL, lookups = 0",
            (following, json.dumps(rest), reason, error_code, now),
            outcome=outcome, error_code=error_code,
            detail=f"{message.provider} -> {following}: {reason}",
        )

    async def finish_lookup(
        self, message_id: int, state: MessageState, now: float, *, outcome: str,
        reason: str | None = None, provider_id: str | None = None,
        send_at: float | None = None, lookups: int | None = None,
    ) -> bool:
        """Record a lookup's outcome for a `checking` message and move it to `state`.

        `send_at` is when the next send (`pending`) or lookup (`unknown`) is due; an
        `unknown` message given no `send_at` gets no further lookup: a human decides.
        False (nothing written) when the message was not `checking`.
        """
        # settle_from is set exactly while a lookup is scheduled or in flight.
        no_lookup = state is not MessageState.UNKNOWN or send_at is None
        return await self._transition(
            message_id, now, "checking",
            "state = ?, reason = ?, provider_id = COALESCE(?, provider_id),"
            " send_at = COALESCE(?, send_at), lookups = COALESCE(?, lookups),"
            " settle_from = CASE WHEN ? THEN NULL ELSE settle_from END",
            (state.value, reason, provider_id, send_at, lookups, no_lookup),
            outcome=outcome, error_code=None, detail=reason,
        )

    async def _transition(
        self, message_id: int, now: float, from_state: str, assignments: str,
        params: Sequence[Any], *, outcome: str, error_code: str | None, detail: str | None,
    ) -> bool:
        """UPDATE one message if it is in `from_state` and record the attempt row with it."""
        async with self.transaction() as db:
            cursor = await db.execute(
                # `assignments` is always a fixed string from this module; values are bound.
                f"UPDATE messages SET {assignments}, updated_at = ?"  # noqa: S608
                " WHERE id = ? AND state = ?",
                (*params, now, message_id, from_state),
            )
            if cursor.rowcount != 1:
                return False
            await db.execute(
                "INSERT INTO attempts (message_id, at, outcome, error_code, detail)"
                " VALUES (?,?,?,?,?)",
                (message_id, now, outcome, error_code, detail or ""),
            )
        return True

    async def release_lookups(self, message_ids: Sequence[int], now: float) -> None:
        """Put claimed but unchecked messages back to `unknown` (the sender is stopping)."""
        if not message_ids:
            return
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE messages SET state = 'unknown', updated_at = ?"
                " WHERE id = ? AND state = 'checking'",
                [(now, message_id) for message_id in message_ids],
            )

    async def known_provider_ids(self, to_number: str, *, besides: int) -> frozenset[str]:
        """Provider ids already recorded for our other messages to `to_number`."""
        async with self._db.execute(
            "SELECT provider_id FROM messages WHERE to_number = ? AND id != ?"
            " AND provider_id IS NOT NULL",
            (to_number, besides),
        ) as cursor:
            return frozenset(str(row[0]) for row in await cursor.fetchall())

    async def attempts(self, message_id: int) -> list[AttemptRow]:
        """Every recorded send attempt and lookup of a message, oldest first."""
        async with self._db.execute(
            "SELECT at, outcome, error_code, detail FROM attempts WHERE message_id = ?"
            " ORDER BY at, id",
            (message_id,),
        ) as cursor:
            return [AttemptRow(**dict(row)) for row in await cursor.fetchall()]

    async def release(self, message_ids: Sequence[int], now: float) -> None:
        """Put claimed but unsent messages back to `pending` (the sender is stopping)."""
        if not message_ids:
            return
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE messages SET state = 'pending', attempts = attempts - 1, updated_at = ?"
                " WHERE id = ? AND state = 'sending'",
                [(now, message_id) for message_id in message_ids],
            )

    async def begin_request(self, message_id: int, now: float) -> None:
        """The request for a claimed message is about to go out (committed before it does)."""
        async with self.transaction() as db:
            await db.execute("UPDATE messages SET request_started_at = ? WHERE id = ?"
                             " AND state = 'sending'", (now, message_id))

    async def recover_interrupted(self, now: float) -> int:
        """Rows left in `sending` or `checking` by a crash: `unknown`, their lookup due now.

        A send interrupted by a crash may have reached the provider: it is never resent
        before a lookup proves it absent. The count of recovered rows is returned.
        """
        async with self.transaction() as db:
            # Claimed in a batch, but the crash came before their turn: never sent.
            unsent = await db.execute(
                "UPDATE messages SET state = 'pending', attempts = attempts - 1, updated_at = ?"
                " WHERE state = 'sending' AND request_started_at = 0",
                (now,),
            )
            await db.execute(
                "INSERT INTO attempts (message_id, at, outcome, detail)"
                " SELECT id, ?, 'interrupted', ? FROM messages WHERE state = 'sending'",
                (now, _INTERRUPTED),
            )
            sending = await db.execute(
                "UPDATE messages SET state = 'unknown', reason = ?,"
                " attempt_started_at = COALESCE(attempt_started_at, updated_at),"
                " settle_from = ?, lookups = 0, send_at = ?, updated_at = ?"
                " WHERE state = 'sending'",
                (_INTERRUPTED, now, now, now),
            )
            # A lookup only reads the provider's records: an interrupted one is simply redone.
            checking = await db.execute(
                "UPDATE messages SET state = 'unknown', send_at = ?, updated_at = ?"
                " WHERE state = 'checking'",
                (now, now),
            )
        if unsent.rowcount:
            log.info("outbox.claimed_unsent_requeued", messages=unsent.rowcount)
        return sending.rowcount + checking.rowcount

    async def next_due(self) -> float | None:
        """The earliest `send_at` of a pending or deferred message, or None."""
        value = await self._scalar(
            "SELECT MIN(send_at) FROM messages WHERE state IN ('pending', 'deferred')")
        return None if value is None else float(value)

    async def next_wakeup(self) -> float | None:
        """The earliest time a pending message or a scheduled lookup is due, or None."""
        value = await self._scalar(
            "SELECT MIN(send_at) FROM messages WHERE state IN ('pending', 'deferred')"
            " OR (state = 'unknown' AND settle_from IS NOT NULL)"
        )
        return None if value is None else float(value)

    async def lookups_scheduled(self) -> int:
        """Messages whose provider lookup is due or in flight."""
        value = await self._scalar(
            "SELECT COUNT(*) FROM messages WHERE state = 'checking'"
            " OR (state = 'unknown' AND settle_from IS NOT NULL)"
        )
        return int(value or 0)

    async def history(
        self, *, number: str | None = None, linkedid: str | None = None,
        since: float | None = None, until: float | None = None, limit: int = 200,
    ) -> list[MessageRow]:
        """Messages, newest first, filtered by recipient/customer number, call or time."""
        where: list[str] = []
        params: list[Any] = []
        if number is not None:
            where.append("(m.to_number = ? OR c.customer_e164 = ? OR c.customer_number = ?)")
            params += [number, number, number]
        if linkedid is not None:
            where.append("c.linkedid = ?")
            params.append(linkedid)
        if since is not None:
            where.append("m.created_at >= ?")
            params.append(since)
        if until is not None:
            where.append("m.created_at < ?")
            params.append(until)
        # Only fixed condition strings are joined in; every value is a bound parameter.
        # Only fixed condition strings are joined in; every value is a bound parameter.
        where_sql = " WHERE " + " AND ".join(where) if where else ""
        sql = _HISTORY_SELECT + where_sql + " ORDER BY m.created_at DESC, m.id DESC LIMIT ?"
        params.append(limit)
        async with self._db.execute(sql, params) as cursor:
            return [MessageRow(**dict(row)) for row in await cursor.fetchall()]

    async def calls(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Recorded calls, oldest first, as plain dicts."""
        async with self._db.execute(
            "SELECT * FROM calls ORDER BY id LIMIT ?", (limit,)
        ) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def purge_before(self, cutoff: float) -> tuple[int, int]:
        """Delete calls that ended before `cutoff` with their messages and attempts.

        Messages still waiting (pending, sending, checking, unknown) keep their call.
        Returns (calls, messages) deleted.
        """
        async with self.transaction() as db:
            async with db.execute(
                "SELECT id FROM calls WHERE ended_at < ? AND id NOT IN (SELECT call_id FROM"
                " messages WHERE state IN ('pending', 'sending', 'checking', 'unknown',"
                " 'deferred', 'held'))", (cutoff,),
            ) as cursor:
                call_ids = [(row[0],) for row in await cursor.fetchall()]
            await forget_calls(db, [call_id for (call_id,) in call_ids])
            await db.executemany(
                "DELETE FROM attempts WHERE message_id IN"
                " (SELECT id FROM messages WHERE call_id = ?)", call_ids)
            messages = 0
            for (call_id,) in call_ids:
                async with db.execute("DELETE FROM messages WHERE call_id = ?",
                                      (call_id,)) as cursor:
                    messages += cursor.rowcount
            await db.executemany("DELETE FROM calls WHERE id = ?", call_ids)
        calls = len(call_ids)
        return calls, messages

    async def execute_outside_transaction(self, sql: str) -> None:
        """A statement that cannot run inside a transaction (VACUUM, checkpoints, PRAGMAs)."""
        async with self._lock, self._db.execute(sql) as cursor:
            await cursor.fetchall()  # a PRAGMA's answer row, read so the statement ends

    async def writable(self) -> bool:
        """Whether a write transaction can start now (the watchdog's database check)."""
        try:
            async with self.transaction():
                return True
        except sqlite3.Error as exc:
            log.error("store.not_writable", error=str(exc))
            return False

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one read query (for the other tables' modules, e.g. the journal)."""
        async with self._db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def counts_by_state(self) -> dict[str, int]:
        async with self._db.execute(
            "SELECT state, COUNT(*) FROM messages GROUP BY state ORDER BY state"
        ) as cursor:
            return {row[0]: row[1] for row in await cursor.fetchall()}


_HISTORY_SELECT = (
    "SELECT m.id, c.pbx, c.linkedid, m.rule, m.to_number, m.provider, m.body, m.state,"
    " m.reason, m.provider_id, m.error_code, m.attempts, m.created_at, m.updated_at,"
    " m.delivery FROM messages m JOIN calls c ON c.id = m.call_id"
)


def _outbound(row: sqlite3.Row, calls: dict[int, tuple[str, str]]) -> OutboundMessage:
    pbx, linkedid = calls[row["call_id"]]
    return OutboundMessage(
        id=row["id"], to=row["to_number"], body=row["body"] or "", provider=row["provider"],
        call_pbx=pbx, call_linkedid=linkedid, rule=row["rule"], attempts=row["attempts"],
        created_at=row["created_at"], fallbacks=tuple(json.loads(row["fallbacks"])),
        attempts_before=row["attempts_before"],
    )


_FACT_FIELDS = tuple(f.name for f in fields(CompletedCall))


async def _insert_call(
    db: aiosqlite.Connection, call: CompletedCall, customer_e164: str | None,
    planned: Sequence[PlannedMessage], now: float,
) -> bool:
    cursor = await db.execute(
        "INSERT OR IGNORE INTO calls (pbx, linkedid, direction, customer_number,"
        " customer_e164, customer_name, did, queue, answered, disposition, agent_id,"
        " agent_name, talk_seconds, wait_seconds, variables, facts, started_at, ended_at,"
        " end_reason, recorded_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        _call_row(call, customer_e164, now),
    )
    if cursor.rowcount == 0:
        return False
    call_id = cursor.lastrowid
    await db.executemany(
        "INSERT OR IGNORE INTO messages (call_id, rule, recipient, to_number, provider,"
        " template, body, encoding, segments, state, reason, send_at, created_at,"
        " updated_at, category, priority, region, expires_at, cost, cancel_if_answered,"
        " due_from, fallbacks) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [_message_row(call_id, message, now) for message in planned],
    )
    # The deferral stays in the message's history after it is sent.
    await db.execute(
        "INSERT INTO attempts (message_id, at, outcome, detail) SELECT id, ?,"
        " 'policy_send_at', reason FROM messages WHERE call_id = ? AND state = 'deferred'",
        (now, call_id),
    )
    await bind_extras(db, int(call_id or 0), planned, now)
    return True


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _call_row(call: CompletedCall, customer_e164: str | None, now: float) -> tuple[Any, ...]:
    facts = {name: getattr(call, name) for name in _FACT_FIELDS}
    facts["variables"] = dict(call.variables)
    return (
        call.pbx, call.linkedid, call.direction.value, call.customer_number, customer_e164,
        call.customer_name, call.did, call.queue, int(call.answered), call.disposition.value,
        call.agent_id, call.agent_name, call.talk_seconds, call.wait_seconds,
        json.dumps(dict(call.variables), ensure_ascii=False),
        json.dumps(facts, ensure_ascii=False, default=str),
        call.started_at, call.ended_at, call.end_reason.value, now,
    )


def _message_row(call_id: int | None, message: PlannedMessage, now: float) -> tuple[Any, ...]:
    body = message.body
    reason: str | None
    if message.skip_reason:
        state, reason = MessageState.SKIPPED, message.skip_reason
    elif message.send_at is not None:
        state, reason = MessageState.DEFERRED, message.wait_reason
    else:
        state, reason = MessageState.PENDING, None
    due = now if message.send_at is None else message.send_at
    return (
        call_id, message.rule, message.recipient, message.to, message.provider,
        message.template, body.text if body else None, body.encoding.value if body else None,
        body.segments if body else None, state.value, reason, due, now, now,
        message.category, message.priority, message.region, message.expires_at, message.cost,
        int(message.cancel_if_answered), due, json.dumps(list(message.fallbacks)),
    )
