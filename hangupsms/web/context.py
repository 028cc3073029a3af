"""What every handler reads: the daemon's store, settings and what it reports on."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from hangupsms.settings import PhoneConfig, WebConfig
from hangupsms.store import Store
from hangupsms.web.metrics import Health, Metrics, Snapshot


@dataclass(frozen=True, slots=True)
class WebContext:
    """What the handlers need: the daemon's store, settings and what it reports on."""

    web: WebConfig
    store: Store
    phone: PhoneConfig
    timezone: str
    auth_tokens: tuple[str, ...]  # each Twilio account's: a valid signature under any counts
    health: Callable[[], Awaitable[Health]]
    snapshot: Callable[[], Awaitable[Snapshot]]
    metrics: Metrics
    clock: Callable[[], float] = field(default=time.time)


CONTEXT = web.AppKey("context", WebContext)
