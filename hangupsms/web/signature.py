"""Twilio's request signature (`X-Twilio-Signature`), checked with Twilio's own validator.

Twilio signs the URL it called. Behind a reverse proxy the daemon sees another host and
perhaps another path prefix, so the URL is rebuilt from the configured `public_url` and the
path and query the proxy passed on.
"""

from __future__ import annotations

from aiohttp import web
from twilio.request_validator import RequestValidator

from hangupsms.web.context import CONTEXT
from hangupsms.web.refusal import refusal

FORM_TYPE = "application/x-www-form-urlencoded"  # all Twilio ever posts


async def signed_form(request: web.Request) -> dict[str, str]:
    """The POSTed form when its signature is valid for one of the configured auth tokens.

    Anything else is refused (an HTTP 4xx, raised): no signature, another content type (the
    body is then never parsed), a body over the app's `client_max_size`, a body that is not a
    form, a wrong signature.
    """
    context = request.app[CONTEXT]
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        raise refusal(request, "unsigned", web.HTTPForbidden(text="invalid signature"))
    if request.content_type != FORM_TYPE:
        raise refusal(request, "content_type",
                      web.HTTPUnsupportedMediaType(text=f"expected {FORM_TYPE}"))
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge as too_large:
        raise refusal(request, "too_large", too_large) from None
    except (UnicodeDecodeError, LookupError, ValueError):  # not UTF-8, unknown charset
        raise refusal(request, "malformed", web.HTTPBadRequest(text="unreadable form")) from None
    fields = {key: str(value) for key, value in form.items()}  # Twilio sends each key once
    # The target as it came in the request line is what Twilio signed (not its normalised
    # form, %3A read as ":"), unless the proxy re-encoded it: either counts.
    urls = dict.fromkeys(context.web.public_url + target
                         for target in (request.raw_path, request.rel_url.path_qs))
    if not any(RequestValidator(token).validate(url, fields, signature)
               for token in context.auth_tokens for url in urls):
        raise refusal(request, "bad_signature", web.HTTPForbidden(text="invalid signature"))
    return fields
