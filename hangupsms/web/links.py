"""`GET /r/{token}`: a tracked link; the click is recorded, then a redirect to its URL."""

from __future__ import annotations

import structlog
from aiohttp import web

from hangupsms.tracking import follow as follow_link
from hangupsms.web.context import CONTEXT
from hangupsms.web.refusal import refusal

log = structlog.get_logger(__name__)


async def follow(request: web.Request) -> web.Response:
    """302 to the URL stored with the token (never one from the request); 404 otherwise."""
    context = request.app[CONTEXT]
    token = request.match_info["token"]
    target = await follow_link(context.store, token, context.clock())
    if target is None:
        raise refusal(request, "unknown_link", web.HTTPNotFound(text="no such link"))
    log.info("web.click", message_id=target.message_id, call_id=target.call_id)
    # Each click is one visit: a cached redirect would hide the next one.
    raise web.HTTPFound(target.url, headers={"Cache-Control": "no-store"})
