"""The outbox side of the policy: what was sent to whom, the guard and incident state.

The decisions themselves are pure (`hangupsms.policy`); this module gathers their facts
from SQLite and records their outcomes. The CLI writes the guard and incident state while
the daemon runs: the sender reads it before every send.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from hangupsms.config import Config
from hangupsms.logs import mask_number
from hangupsms.models import CompletedCall, MessageState, OutboundMessage
from hangupsms.policy import (
    Cancellable,
    Decision,
    SendFacts,
    Verdict,
    Waiting,
    cancellations,
    decide,
    rule_caps,
    with_incident,
)
from hangupsms.policy.limits import GuardFacts, destination_prefix, price
from hangupsms.render import measure
from hangupsms.store import Store
from hangupsms.suppression import SuppressionList

log = structlog.get_logger(__name__)

# A message in these states went to the provider (or may have): it counts against caps.
_ATTEMPTED = "('sent', 'delivered', 'undelivered', 'unknown', 'checking')"
_WAITING = "('pending', 'deferred', 'sending')"
_HOUR, _DAY = 3600.0, 86_400.0
# A held message is the guard's unless an empty coupon pool holds it: that one waits for
# `coupons load` (tracking.release_held), whatever the guard does.
_HELD_BY_GUARD = "state = 'held' AND id NOT IN (SELECT message_id FROM held_coupons)"


@dataclass(frozen=True, slots=True)
class GuardState:
    tripped_at: float | None  # None: not tripped
    reason: str
    released_at: float | None
    trips: int  # times it tripped, ever


@dataclass(frozen=True, slots=True)
class Incident:
    text: str
    replace: bool
    since: float


class PolicyStore:
    """Policy facts and outcomes in one Store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.suppressions = SuppressionList(store)

    async def _state(self, key: str) -> dict[str, Any] | None:
        rows = await self._store.rows("SELECT value FROM policy_state WHERE key = ?", (key,))
        return None if not rows else dict(json.loads(rows[0][0]))

    async def _set_state(self, key: str, value: dict[str, Any] | None, now: float,
                         event: str, detail: str) -> None:
        async with self._store.transaction() as db:
            if value is None:
                await db.execute("DELETE FROM policy_state WHERE key = ?", (key,))
            else:
                await db.execute("INSERT OR REPLACE INTO policy_state (key, value) VALUES (?, ?)",
                                 (key, json.dumps(value, ensure_ascii=False)))
            await db.execute("INSERT INTO policy_events (at, kind, detail) VALUES (?, ?, ?)",
                             (now, event, detail))

    async def guard(self) -> GuardState:
        state = await self._state("guard") or {}
        rows = await self._store.rows(
            "SELECT COUNT(*) FROM policy_events WHERE kind = 'guard_tripped'")
        return GuardState(state.get("tripped_at"), str(state.get("reason", "")),
                          state.get("released_at"), int(rows[0][0]))

    async def trip(self, reason: str, now: float) -> None:
        state = await self._state("guard") or {}
        state.update(tripped_at=now, reason=reason)
        await self._set_state("guard", state, now, "guard_tripped", reason)

    async def release(self, now: float, *, discard: bool, by: str = "cli") -> int:
        """Clear the guard; held messages go back to the outbox (or are skipped, `discard`).

        Counting for the guard's limits restarts at the release: a human looked.
        """
        state = await self._state("guard") or {}
        state.update(tripped_at=None, reason="", released_at=now)
        await self._set_state("guard", state, now, "guard_released",
                              f"by {by}; held messages {'discarded' if discard else 'queued'}")
        target = MessageState.SKIPPED if discard else MessageState.PENDING
        reason = f"held by the fraud guard; {'discarded' if discard else 'released'} by {by}"
        async with self._store.transaction() as db:
            # History shows who let each message go (or dropped it), and when.
            await db.execute(
                "INSERT INTO attempts (message_id, at, outcome, detail)"  # noqa: S608
                f" SELECT id, ?, ?, ? FROM messages WHERE {_HELD_BY_GUARD}",
                (now, "guard_discard" if discard else "guard_release", reason))
            async with db.execute(
                "UPDATE messages SET state = ?, reason = ?, send_at = ?,"  # noqa: S608
                f" updated_at = ? WHERE {_HELD_BY_GUARD}",
                (target.value, reason, now, now)) as cursor:
                return cursor.rowcount

    async def held_by_kind(self) -> dict[str, int]:
        """Held messages by what holds them: `guard` (the fraud guard) or `coupon` (a pool)."""
        rows = await self._store.rows(
            "SELECT CASE WHEN h.message_id IS NULL THEN 'guard' ELSE 'coupon' END, COUNT(*)"
            " FROM messages m LEFT JOIN held_coupons h ON h.message_id = m.id"
            " WHERE m.state = 'held' GROUP BY 1")
        return {str(r[0]): int(r[1]) for r in rows}

    async def incident(self) -> Incident | None:
        state = await self._state("incident")
        if state is None:
            return None
        return Incident(str(state["text"]), bool(state["replace"]), float(state["since"]))

    async def set_incident(self, text: str | None, now: float, *, replace: bool = False) -> None:
        if text is None:
            await self._set_state("incident", None, now, "incident_off", "")
        else:
            value = {"text": text, "replace": replace, "since": now}
            await self._set_state("incident", value, now, "incident_on",
                                  f"{'replace' if replace else 'append'}: {text}")

    async def waiting(self, message_id: int) -> Waiting:
        rows = await self._store.rows(
            "SELECT id, to_number, rule, category, priority, region, expires_at, cost"
            " FROM messages WHERE id = ?", (message_id,))
        row = rows[0]
        return Waiting(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])

    async def facts(self, message: Waiting, cfg: Config, now: float) -> SendFacts:
        """The suppression, cap, budget and guard facts `policy.decide` needs."""
        policy = cfg.policy
        periods = [c.per for c in (*policy.budget, *policy.categories[message.category].caps,
                                   *rule_caps(cfg, message.rule))]
        since = now - max(periods, default=0.0)
        sent = await self._store.rows(
            f"SELECT attempt_started_at, category, rule FROM messages"  # noqa: S608
            f" WHERE to_number = ? AND state IN {_ATTEMPTED} AND attempt_started_at > ?"
            f" AND id != ?", (message.to, since, message.id))
        waiting = await self._store.rows(
            f"SELECT send_at, category FROM messages WHERE to_number = ?"  # noqa: S608
            f" AND state IN {_WAITING} AND priority > ? AND id != ?",
            (message.to, message.priority, message.id))
        guard = await self.guard()
        return SendFacts(
            suppressed=await self.suppressions.contains(message.to),
            guard_tripped=guard.tripped_at is not None,
            sent_to_recipient=[float(r[0]) for r in sent],
            sent_in_category=[float(r[0]) for r in sent if r[1] == message.category],
            reserved_budget=[float(r[0]) for r in waiting],
            reserved_category=[float(r[0]) for r in waiting if r[1] == message.category],
            guard=await self._guard_facts(message, cfg, guard, now),
            sent_by_rule=[float(r[0]) for r in sent if r[2] == message.rule],
        )

    async def _guard_facts(self, message: Waiting, cfg: Config, guard: GuardState,
                           now: float) -> GuardFacts:
        released = guard.released_at or 0.0
        hour, day = max(now - _HOUR, released), max(now - _DAY, released)
        prefix = destination_prefix(message.to, cfg.policy.guard.prefix_digits)
        rows = await self._store.rows(
            f"SELECT COUNT(*), COALESCE(SUM(cost), 0),"  # noqa: S608
            f" COALESCE(SUM(attempt_started_at >= ?), 0), COALESCE(SUM(CASE WHEN"
            f" attempt_started_at >= ? THEN cost ELSE 0 END), 0), COALESCE(SUM("
            f"attempt_started_at >= ? AND substr(to_number, 1, ?) = ?), 0)"
            f" FROM messages WHERE state IN {_ATTEMPTED} AND attempt_started_at >= ?",
            (hour, hour, hour, len(prefix), prefix, day))
        day_count, day_cost, hour_count, hour_cost, prefix_hour = rows[0]
        return GuardFacts(prefix, int(prefix_hour), int(hour_count), int(day_count),
                          float(hour_cost), float(day_cost))

    async def apply(self, message_id: int, decision: Decision, now: float) -> None:
        """Record a decision that stops a claimed message from going out now.

        The claim counted a send attempt; none was made, so the count is given back. A
        deferred message's max_age counts from its new time (`due_from`): waiting for a
        window or a cap is not staleness.
        """
        state = {Verdict.SKIP: MessageState.SKIPPED, Verdict.EXPIRE: MessageState.EXPIRED,
                 Verdict.SEND_AT: MessageState.DEFERRED, Verdict.HOLD: MessageState.HELD,
                 }[decision.verdict]
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE messages SET state = ?, reason = ?, send_at = COALESCE(?, send_at),"
                " due_from = COALESCE(?, due_from), attempts = attempts - 1, updated_at = ?"
                " WHERE id = ?",
                (state.value, decision.reason, decision.at, decision.at, now, message_id))
            await db.execute(
                "INSERT INTO attempts (message_id, at, outcome, detail) VALUES (?, ?, ?, ?)",
                (message_id, now, f"policy_{decision.verdict.value}", decision.reason))

    async def set_body(self, message: Waiting, text: str, cfg: Config) -> None:
        measured = measure(text)
        cost = price(cfg.policy.prices, message.region, measured.segments)
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE messages SET body = ?, encoding = ?, segments = ?, cost = ? WHERE id = ?",
                (text, measured.encoding.value, measured.segments, cost, message.id))

    async def cancel_for(self, call: CompletedCall, customer_e164: str | None,
                         now: float) -> int:
        """Cancel waiting messages that `call` (answered) makes pointless; returns how many."""
        if not call.answered or customer_e164 is None:
            return 0
        rows = await self._store.rows(
            "SELECT m.id, m.to_number, c.ended_at FROM messages m JOIN calls c"
            " ON c.id = m.call_id WHERE m.to_number = ? AND m.cancel_if_answered = 1"
            " AND m.state IN ('pending', 'deferred', 'held') AND c.linkedid != ?",
            (customer_e164, call.linkedid))
        found = cancellations(call, customer_e164,
                              [Cancellable(r[0], r[1], float(r[2])) for r in rows])
        async with self._store.transaction() as db:
            for message_id, reason in found:
                await db.execute(
                    "UPDATE messages SET state = 'cancelled', reason = ?, updated_at = ?"
                    " WHERE id = ? AND state IN ('pending', 'deferred', 'held')",
                    (reason, now, message_id))
                await db.execute(
                    "INSERT INTO attempts (message_id, at, outcome, detail) VALUES (?,?,?,?)",
                    (message_id, now, "policy_cancel", reason))
                # A cancelled message will never get its coupon codes.
                await db.execute("DELETE FROM held_coupons WHERE message_id = ?", (message_id,))
        if found:
            log.info("policy.cancelled", messages=len(found), to=mask_number(customer_e164),
                     linkedid=call.linkedid)
        return len(found)

    async def suppressed_among(self, numbers: Sequence[str]) -> frozenset[str]:
        return await self.suppressions.suppressed_among([n for n in numbers if n])


class PolicyGate:
    """The sender's check before each send: `admit` says whether, and with which body."""

    def __init__(self, store: Store, cfg: Config) -> None:
        self.policy_store = PolicyStore(store)
        self.cfg = cfg

    async def admit(self, message: OutboundMessage, now: float
                    ) -> tuple[Decision, OutboundMessage]:
        ps = self.policy_store
        waiting = await ps.waiting(message.id)
        decision = decide(waiting, await ps.facts(waiting, self.cfg, now), self.cfg, now)
        if decision.verdict is not Verdict.SEND_NOW:
            await self._record(message, decision, now)
            return decision, message
        incident = await ps.incident()
        if incident is not None:
            body = with_incident(message.body, incident.text, incident.replace)
            if body != message.body:
                await ps.set_body(waiting, body, self.cfg)
                message = dataclasses.replace(message, body=body)
        return decision, message

    async def _record(self, message: OutboundMessage, decision: Decision, now: float) -> None:
        ps = self.policy_store
        bound = log.bind(message_id=message.id, rule=message.rule, to=mask_number(message.to))
        if decision.verdict is Verdict.HOLD and (await ps.guard()).tripped_at is None:
            await ps.trip(decision.reason, now)
            bound.error("policy.guard_tripped", reason=decision.reason)
        await ps.apply(message.id, decision, now)
        bound.info("sms.policy", verdict=decision.verdict.value, reason=decision.reason,
                   until=decision.at)
