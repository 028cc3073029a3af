"""`POST /twilio/status`: Twilio's message status callbacks (delivery receipts)."""

from __future__ import annotations

import structlog
from aiohttp import web

from hangupsms.replies import Receipt, ReceiptOutcome, apply_receipt
from hangupsms.web.context import CONTEXT
from hangupsms.web.refusal import refusal
from hangupsms.web.signature import signed_form

log = structlog.get_logger(__name__)
_MAX_ID_DIGITS = 18  # below 2**63


async def status(request: web.Request) -> web.Response:
    """Record a status once; anything not signed by Twilio is refused, nothing recorded."""
    context = request.app[CONTEXT]
    form = await signed_form(request)
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    state = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    if not sid or not state:
        raise refusal(request, "incomplete",
                      web.HTTPBadRequest(text="MessageSid and MessageStatus are required"))
    raw_id = request.query.get("m", "")
    # ASCII digits only ("²".isdigit() too), and short enough for an SQLite integer.
    readable = raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= _MAX_ID_DIGITS
    receipt = Receipt(message_id=int(raw_id) if readable else None, provider_id=sid,
                      status=state, error_code=form.get("ErrorCode") or None)
    outcome = await apply_receipt(context.store, receipt, context.clock())
    if outcome is ReceiptOutcome.UNKNOWN_MESSAGE:
        log.warning("web.receipt_unknown_message", provider_id=sid, status=state,
                    message_id=receipt.message_id)
    else:
        log.info("web.receipt", provider_id=sid, status=state, error_code=receipt.error_code,
                 message_id=receipt.message_id, outcome=outcome.value)
    # Twilio does not resend a status callback: any 2xx ends it.
    return web.Response(status=204)
