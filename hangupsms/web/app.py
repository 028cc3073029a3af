"""The aiohttp application and its lifecycle; one module per concern holds the handlers."""

from __future__ import annotations

import structlog
from aiohttp import web

from hangupsms.web import callbacks, inbound, links, observe, report
from hangupsms.web.context import CONTEXT, WebContext

log = structlog.get_logger(__name__)


def build_app(context: WebContext) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)  # Twilio's forms are a few hundred bytes
    app[CONTEXT] = context
    app.router.add_post("/twilio/status", callbacks.status)
    app.router.add_post("/twilio/inbound", inbound.receive)
    # GET only: a HEAD (a link checker, a preview) is no click.
    app.router.add_get("/r/{token}", links.follow, allow_head=False)
    app.router.add_get("/healthz", observe.healthz)
    app.router.add_get("/metrics", observe.scrape)
    app.router.add_get("/report", report.page)
    return app


class WebServer:
    """Listens on `web.host:web.port` (behind the site's reverse proxy) until `close()`."""

    def __init__(self, context: WebContext) -> None:
        self._context = context
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Bind and serve; an address in use fails loudly (OSError)."""
        runner = web.AppRunner(build_app(self._context), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._context.web.host, self._context.web.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("web.listening", host=self._context.web.host, port=self.port,
                 public_url=self._context.web.public_url)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
