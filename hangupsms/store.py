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

from hangupsms.models import CompletedCall, MessageState, OutboundMessage, PlannedMessage

# Each entry moves the schema from version i to i+1. Never edit a released entry: append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        pbx TEXT NOT NULL,
        linkedid TEXT NOT NULL,
        direction TEXT NOT NULL,
        customer_number TEXT NOT NULL,
        customer_e164 TEXT,
        customer_name TEXT NOT NULL,
        did TEXT,
        queue TEXT,
        answered INTEGER NOT NULL,
        disposition TEXT NOT NULL,
        agent_id TEXT,
        agent_name TEXT,
        talk_seconds INTEGER NOT NULL,
        wait_seconds INTEGER NOT NULL,
        variables TEXT NOT NULL,
        facts TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        end_reason TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        UNIQUE (pbx, linkedid)
    );
    CREATE INDEX calls_customer ON calls (customer_e164);
    CREATE INDEX calls_ended ON calls (ended_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        call_id INTEGER NOT NULL REFERENCES calls (id),
        rule TEXT NOT NULL,
        recipient TEXT NOT NULL,
        to_number TEXT NOT NULL,
        provider TEXT NOT NULL,
        template TEXT NOT NULL,
        body TEXT,
        encoding TEXT,
        segments INTEGER,
        state TEXT NOT NULL,
        reason TEXT,
        provider_id TEXT,
        error_code TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        send_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (call_id, rule, to_number)
    );
    CREATE INDEX messages_due ON messages (state, send_at);
    CREATE INDEX messages_to ON messages (to_number);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages (id),
        at REAL NOT NULL,
        outcome TEXT NOT NULL,
        error_code TEXT,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX attempts_message ON attempts (message_id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


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


class Store:
    """One SQLite file in WAL mode; the daemon writes, the CLI may read at the same time."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection serves several tasks (consumer, sender): one transaction at a time.
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
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

        Messages that can be sent are `pending` (due now); the others are `skipped` with
        their reason. A replayed call changes nothing: (pbx, linkedid) and
        (call, rule, recipient) are unique.
        """
        async with self._transaction() as db:
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
                " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [_message_row(call_id, message, now) for message in planned],
            )
        return True

    async def claim_due(self, now: float, limit: int = 50) -> list[OutboundMessage]:
        """Move due `pending` messages to `sending` (oldest first) and return them."""
        async with self._transaction() as db:
            async with db.execute(
                "UPDATE messages SET state = 'sending', attempts = attempts + 1, updated_at = ?"
                " WHERE id IN (SELECT id FROM messages WHERE state = 'pending' AND send_at <= ?"
                " ORDER BY send_at, id LIMIT ?)"
                " RETURNING id, to_number, body, provider, call_id, rule, attempts",
                (now, now, limit),
            ) as cursor:
                rows = list(await cursor.fetchall())
            calls = await self._call_keys([row["call_id"] for row in rows])
        rows.sort(key=lambda row: int(row["id"]))
        return [
            OutboundMessage(
                id=row["id"], to=row["to_number"], body=row["body"] or "",
                provider=row["provider"], call_pbx=calls[row["call_id"]][0],
                call_linkedid=calls[row["call_id"]][1], rule=row["rule"],
                attempts=row["attempts"],
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
        async with self._transaction() as db:
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

    async def release(self, message_ids: Sequence[int], now: float) -> None:
        """Put claimed but unsent messages back to `pending` (the sender is stopping)."""
        if not message_ids:
            return
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE messages SET state = 'pending', attempts = attempts - 1, updated_at = ?"
                " WHERE id = ? AND state = 'sending'",
                [(now, message_id) for message_id in message_ids],
            )

    async def recover_interrupted(self, now: float) -> int:
        """Rows left in `sending` by a crash may have reached the provider: mark them `unknown`."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE messages SET state = 'unknown',"
                " reason = 'interrupted while sending; not resent to avoid a duplicate',"
                " updated_at = ? WHERE state = 'sending'",
                (now,),
            )
        return cursor.rowcount

    async def next_due(self) -> float | None:
        """The earliest `send_at` of a pending message, or None."""
        value = await self._scalar("SELECT MIN(send_at) FROM messages WHERE state = 'pending'")
        return None if value is None else float(value)

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

    async def counts_by_state(self) -> dict[str, int]:
        async with self._db.execute(
            "SELECT state, COUNT(*) FROM messages GROUP BY state ORDER BY state"
        ) as cursor:
            return {row[0]: row[1] for row in await cursor.fetchall()}


_HISTORY_SELECT = (
    "SELECT m.id, c.pbx, c.linkedid, m.rule, m.to_number, m.provider, m.body, m.state,"
    " m.reason, m.provider_id, m.error_code, m.attempts, m.created_at, m.updated_at"
    " FROM messages m JOIN calls c ON c.id = m.call_id"
)


_FACT_FIELDS = tuple(f.name for f in fields(CompletedCall))


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
    state = MessageState.SKIPPED if message.skip_reason else MessageState.PENDING
    return (
        call_id, message.rule, message.recipient, message.to, message.provider,
        message.template, body.text if body else None, body.encoding.value if body else None,
        body.segments if body else None, state.value, message.skip_reason, now, now, now,
    )
