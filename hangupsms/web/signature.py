"""Twilio's request signature (`X-Twilio-Signature`), checked with Twilio's own validator.

Twilio signs the URL it called. Behind a reverse proxy the daemon sees another host and
perhaps another path prefix, so the URL is rebuilt from the configured `public_url` and the
path and query the proxy passed on.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from twilio.request_validator import RequestValidator

log = structlog.get_logger(__name__)


async def signed_form(
    request: web.Request, public_url: str, auth_tokens: tuple[str, ...]
) -> dict[str, str] | None:
    """The POSTed form when its signature is valid for one of `auth_tokens`; else None."""
    form = await request.post()
    fields = {key: str(value) for key, value in form.items()}  # Twilio sends each key once
    signature = request.headers.get("X-Twilio-Signature")
    url = public_url + request.rel_url.path_qs
    if signature and any(RequestValidator(token).validate(url, fields, signature)
                         for token in auth_tokens):
        return fields
    log.warning("web.signature_rejected", path=request.path, signed=bool(signature))
    return None

