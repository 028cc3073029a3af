"""`POST /twilio/inbound`: replies to our messages (STOP, START, HELP, ratings, anything)."""

from __future__ import annotations

import structlog
from aiohttp import web
from twilio.twiml.messaging_response import MessagingResponse

from hangupsms.logs import mask_number
from hangupsms.optout import normalise
from hangupsms.replies import Inbound, ReplyKind, apply_inbound
from hangupsms.web.context import CONTEXT
from hangupsms.web.refusal import refusal
from hangupsms.web.signature import signed_form

log = structlog.get_logger(__name__)


async def receive(request: web.Request) -> web.Response:
    """Apply a reply once; answer HELP with the help text (TwiML), anything else silently."""
    context = request.app[CONTEXT]
    form = await signed_form(request)
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    sender = form.get("From", "")
    customer = normalise(sender, context.phone)
    if not sid or customer is None:
        log.warning("web.inbound_unreadable", sid=sid[:64], sender=mask_number(sender[:64]))
        raise refusal(request, "incomplete",
                      web.HTTPBadRequest(text="MessageSid and a readable From are required"))
    message = Inbound(sid=sid, from_number=customer, to_number=form.get("To", ""),
                      body=form.get("Body", ""))
    outcome = await apply_inbound(context.store, message, customer, context.web,
                                  context.clock())
    log.info("web.inbound", kind=outcome.kind.value, replay=outcome.replay,
             sender=mask_number(customer), score=outcome.score, call_id=outcome.call_id)
    answer = MessagingResponse()
    if outcome.kind is ReplyKind.HELP:
        answer.message(context.web.help_text)
    return web.Response(text=str(answer), content_type="application/xml")
