"""`GET /healthz` and `GET /metrics` (Prometheus text format, via prometheus-client)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hangupsms.web.context import CONTEXT


async def healthz(request: web.Request) -> web.Response:
    """200 when the AMI links, the database and the sender are fine; 503 naming what is not."""
    health = await request.app[CONTEXT].health()
    body = {"ok": health.ok, "ami": dict(health.ami), "database": health.database,
            "sender": health.sender}
    return web.json_response(body, status=200 if health.ok else 503)


async def scrape(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    snapshot = await context.snapshot()
    body = context.metrics.render(snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
