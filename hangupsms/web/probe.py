"""How the web side reads the running daemon: its health and its figures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hangupsms.ami import ConnState
from hangupsms.policystore import PolicyStore
from hangupsms.reportdata import delivery_counts, reply_counts, total_clicks
from hangupsms.web.context import WebContext
from hangupsms.web.metrics import Health, Metrics, Snapshot

if TYPE_CHECKING:
    from hangupsms.daemon import Daemon
    from hangupsms.dispatch import Dispatcher
    from hangupsms.pipeline import CallPipeline
    from hangupsms.store import Store


def web_context(
    daemon: Daemon, store: Store, pipeline: CallPipeline, dispatcher: Dispatcher,
    metrics: Metrics,
) -> WebContext:
    """The handlers' view of `daemon` (which must have a `web:` configuration)."""
    cfg = daemon.cfg
    if cfg.web is None:
        raise ValueError("the web server needs the web: section")

    async def health() -> Health:
        return Health(
            ami={c.pbx.name: c.state is ConnState.READY for c in daemon.connections},
            database=await store.writable(), sender=dispatcher.alive)

    policy = PolicyStore(store)

    async def snapshot() -> Snapshot:
        guard = await policy.guard()
        return Snapshot(
            health=await health(), events=pipeline.events_fed,
            events_dropped=daemon.queue.dropped, event_queue=daemon.queue.qsize(),
            calls_recorded=pipeline.calls_recorded, calls_live=pipeline.live_calls(),
            messages=await store.counts_by_state(), delivery=await delivery_counts(store),
            clicks=await total_clicks(store), replies=await reply_counts(store),
            guard_tripped=guard.tripped_at is not None, guard_trips=guard.trips,
            held=await policy.held_by_kind())

    tokens = tuple(p.auth_token for p in cfg.providers.values() if p.kind == "twilio")
    return WebContext(web=cfg.web, store=store, phone=cfg.phone, timezone=cfg.timezone,
                      auth_tokens=tokens, health=health, snapshot=snapshot, metrics=metrics,
                      clock=daemon.wall_clock)
