"""What the web server refuses: one log line and one counter per refused request."""

from __future__ import annotations

import structlog
from aiohttp import web

from hangupsms.web.context import CONTEXT

log = structlog.get_logger(__name__)
_SHOWN = 200  # characters of a refused path in the log: a 10 KB path is not worth more


def refusal(request: web.Request, reason: str, answer: web.HTTPError) -> web.HTTPError:
    """`answer`, to raise for a request refused for `reason`, counted and logged."""
    request.app[CONTEXT].metrics.refuse(reason)
    # The target as it came (percent-encoded), controls and bidi characters escaped by repr.
    shown = repr(request.raw_path[:_SHOWN])[1:-1]
    log.warning("web.refused", reason=reason, status=answer.status_code,
                method=request.method, path=shown)
    return answer
