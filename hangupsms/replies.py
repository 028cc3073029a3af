"""What comes back from the carrier: delivery receipts and inbound replies, each applied once."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiosqlite

from hangupsms.suppression import suppress_in, unsuppress_in

if TYPE_CHECKING:
    from hangupsms.settings import WebConfig
    from hangupsms.store import Store

# Twilio's final message statuses; queued, sending, sent and accepted are steps on the way.
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed"})
SOURCE = "sms"


class ReceiptOutcome(enum.StrEnum):
    APPLIED = "applied"
    REPLAY = "replay"  # this status of this message was recorded before: nothing changes
    UNKNOWN_MESSAGE = "unknown_message"  # no message of ours has this id or SID


class ReplyKind(enum.StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    RATING = "rating"
    REPLY = "reply"


@dataclass(frozen=True, slots=True)
class Receipt:
    """One status callback: our message id (from the callback URL) when given, Twilio's SID."""

    message_id: int | None
    provider_id: str
    status: str
    error_code: str | None


@dataclass(frozen=True, slots=True)
class Inbound:
    sid: str
    from_number: str
    to_number: str
    body: str


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    kind: ReplyKind
    replay: bool
    score: int | None = None
    call_id: int | None = None


async def apply_receipt(store: Store, receipt: Receipt, now: float) -> ReceiptOutcome:
    """Record a status callback; a final status sets the message's `delivery` and error code."""
    async with store.transaction() as db:
        found = await _receipt_message(db, receipt)
        if found is None:
            return ReceiptOutcome.UNKNOWN_MESSAGE
        message_id, call_id = found
        async with db.execute(
            "INSERT OR IGNORE INTO receipts (message_id, call_id, provider_id, status,"
            " error_code, at) VALUES (?,?,?,?,?,?)",
            (message_id, call_id, receipt.provider_id, receipt.status, receipt.error_code, now),
        ) as cursor:
            if cursor.rowcount == 0:
                return ReceiptOutcome.REPLAY
        if receipt.status in FINAL_STATUSES:
            await db.execute(
                "UPDATE messages SET delivery = ?, delivered_at = ?,"
                " error_code = COALESCE(?, error_code),"
                " provider_id = COALESCE(provider_id, ?) WHERE id = ?",
                (receipt.status, now, receipt.error_code, receipt.provider_id, message_id),
            )
    return ReceiptOutcome.APPLIED


async def _receipt_message(
    db: aiosqlite.Connection, receipt: Receipt
) -> tuple[int, int] | None:
    if receipt.message_id is not None:
        # The id came in the signed callback URL; a SID we already hold must agree with it.
        sql = ("SELECT id, call_id FROM messages WHERE id = ?"
               " AND (provider_id IS NULL OR provider_id = ?)")
        params: tuple[object, ...] = (receipt.message_id, receipt.provider_id)
    else:
        sql = "SELECT id, call_id FROM messages WHERE provider_id = ? ORDER BY id LIMIT 1"
        params = (receipt.provider_id,)
    async with db.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def classify(body: str, web: WebConfig) -> ReplyKind | int:
    """A keyword's kind, a 1-5 digit as its score, anything else a plain reply.

    Keywords match the whole message after trimming and case-folding.
    """
    word = body.strip().casefold()
    for kind, words in ((ReplyKind.OPT_OUT, web.stop_keywords),
                        (ReplyKind.OPT_IN, web.start_keywords),
                        (ReplyKind.HELP, web.help_keywords)):
        if word in {w.strip().casefold() for w in words}:
            return kind
    if len(word) == 1 and word in "12345":
        return int(word)
    return ReplyKind.REPLY


async def apply_inbound(
    store: Store, message: Inbound, customer: str, web: WebConfig, now: float
) -> InboundOutcome:
    """Record a reply once (by its SID) with what it does, in one transaction.

    `customer` is the sender's number in E.164. STOP-like words suppress it, START-like
    words lift that, a digit within `survey_window` of a survey message rates that call.
    """
    found = classify(message.body, web)
    async with store.transaction() as db:
        async with db.execute("SELECT kind, call_id FROM inbound WHERE sid = ?",
                              (message.sid,)) as cursor:
            seen = await cursor.fetchone()
        if seen is not None:
            return InboundOutcome(ReplyKind(seen[0]), replay=True, call_id=seen[1])
        survey = None
        if isinstance(found, int):
            survey = await _survey_message(db, customer, web, now)
        kind = found if isinstance(found, ReplyKind) else (
            ReplyKind.RATING if survey is not None else ReplyKind.REPLY)
        context = survey or await _latest_message(db, customer)
        message_id, call_id = (context[0], context[1]) if context else (None, None)
        async with db.execute(
            "INSERT INTO inbound (sid, from_number, to_number, body, kind, message_id, call_id,"
            " received_at) VALUES (?,?,?,?,?,?,?,?)",
            (message.sid, customer, message.to_number, message.body, kind.value, message_id,
             call_id, now),
        ) as cursor:
            inbound_id = cursor.lastrowid
        reason = f"replied {message.body.strip()[:20]}"
        if kind is ReplyKind.OPT_OUT:
            await suppress_in(db, customer, reason=reason, source=SOURCE, now=now)
        elif kind is ReplyKind.OPT_IN:
            await unsuppress_in(db, customer, reason=reason, source=SOURCE, now=now)
        elif kind is ReplyKind.RATING and survey is not None and isinstance(found, int):
            await db.execute(
                "INSERT INTO ratings (inbound_id, call_id, message_id, customer, agent_id, queue,"
                " score, at) VALUES (?,?,?,?,?,?,?,?)",
                (inbound_id, survey[1], survey[0], customer, survey[2], survey[3], found, now),
            )
            return InboundOutcome(kind, replay=False, score=found, call_id=survey[1])
    return InboundOutcome(kind, replay=False, call_id=call_id)


_Context = tuple[int, int, str | None, str | None]  # message id, call id, agent, queue


async def _survey_message(
    db: aiosqlite.Connection, customer: str, web: WebConfig, now: float
) -> _Context | None:
    """The latest survey message sent to `customer` within the window."""
    if not web.survey_rules:
        return None
    marks = ",".join("?" * len(web.survey_rules))
    # Only placeholders are joined in; every value is bound.
    sql = ("SELECT m.id, m.call_id, c.agent_id, c.queue FROM messages m JOIN calls c"  # noqa: S608
           f" ON c.id = m.call_id WHERE m.to_number = ? AND m.rule IN ({marks})"
           " AND m.state = 'sent' AND m.attempt_started_at >= ?"
           " ORDER BY m.attempt_started_at DESC, m.id DESC LIMIT 1")
    async with db.execute(
        sql,
        (customer, *web.survey_rules, now - web.survey_window),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else (int(row[0]), int(row[1]), row[2], row[3])


async def _latest_message(db: aiosqlite.Connection, customer: str) -> _Context | None:
    """The latest message sent to `customer`: what a plain reply most likely answers."""
    async with db.execute(
        "SELECT m.id, m.call_id, c.agent_id, c.queue FROM messages m JOIN calls c"
        " ON c.id = m.call_id WHERE m.to_number = ? AND m.state = 'sent'"
        " ORDER BY m.attempt_started_at DESC, m.id DESC LIMIT 1", (customer,),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else (int(row[0]), int(row[1]), row[2], row[3])

