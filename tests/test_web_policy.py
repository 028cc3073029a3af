"""The web side meets the policy: a STOP by SMS reaches a waiting text; the guard on /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hangupsms.config import TemplateConfig, load_config
from hangupsms.daemon import Daemon
from hangupsms.models import PlannedMessage
from hangupsms.policy import OPTED_OUT
from hangupsms.policystore import PolicyStore
from hangupsms.render import Renderer
from hangupsms.replay import AmiReplayServer, load_transcript
from hangupsms.store import Store
from tests.faketwilio import FakeClock
from tests.lab import FIXTURES, SECRET, USER, fake_twilio
from tests.outboxrig import _call
from tests.policylab import only_call
from tests.webrig import CUSTOMER, WebRig, inbound_form, web_config

FOOTER = "Reply STOP to opt out."
HOUR = 3600.0


def _rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def _thanks_as_marketing_an_hour_later(config: Path) -> None:
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["templates"]["thanks"] = {"text": raw["templates"]["thanks"], "category": "marketing"}
    raw["policy"] = {"categories": {"marketing": {"footers": {"default": FOOTER}}}}
    next(r for r in raw["rules"] if r["name"] == "thanks")["send"]["delay"] = "1h"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), "utf-8")


@contextlib.asynccontextmanager
async def deferred_rig(tmp_path: Path, clock: FakeClock) -> AsyncIterator[
        tuple[WebRig, AmiReplayServer]]:
    """Alice's answered call (a.ami): a marketing thank-you due in an hour, not yet sent.

    Her second call (h_unicode.ami) waits in the replay until `ami.released` is set.
    """
    first = FIXTURES / "a.ami"
    async with (fake_twilio() as twilio,
                AmiReplayServer([first, FIXTURES / "h_unicode.ami"], username=USER,
                                secret=SECRET, hold_at=len(load_transcript(first))) as ami):
        config = web_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url)
        _thanks_as_marketing_an_hour_later(config)
        daemon = Daemon(load_config(config), wall_clock=clock)
        runner = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(30):
                await daemon.ready.wait()
                await daemon.wait_until(_states_are(tmp_path / "h.db", {"deferred": 1}))
            assert daemon.web is not None and daemon.web.port is not None
            async with aiohttp.ClientSession() as http:
                yield (WebRig(daemon, twilio, http, f"http://127.0.0.1:{daemon.web.port}",
                              tmp_path / "h.db"), ami)
        finally:
            daemon.stop.set()
            await runner


def _states_are(db: Path, expected: dict[str, int]) -> Callable[[], Awaitable[bool]]:
    async def holds() -> bool:
        return dict(_rows(db, "SELECT state, COUNT(*) FROM messages GROUP BY state")) == expected
    return holds


async def _come_due(rig: WebRig, clock: FakeClock, expected: dict[str, int]) -> None:
    """The hour passes; the sender, woken, decides on what came due."""
    clock.advance(HOUR + 1)
    assert rig.daemon.dispatcher is not None
    rig.daemon.dispatcher.wake()
    async with asyncio.timeout(30):
        await rig.daemon.wait_until(_states_are(rig.db, expected))


async def test_a_stop_by_sms_skips_the_waiting_text_and_start_lets_the_next_one_go(
        tmp_path: Path) -> None:
    clock = FakeClock()  # 16:00 in London: inside the marketing window all along
    async with deferred_rig(tmp_path, clock) as (rig, ami):
        [(send_at,)] = _rows(rig.db, "SELECT send_at FROM messages")
        assert send_at == clock() + HOUR
        stop = await rig.post("/twilio/inbound", inbound_form("SM1", "STOP"))
        assert stop.status == 200
        await _come_due(rig, clock, {"skipped": 1})
        assert _rows(rig.db, "SELECT state, reason FROM messages") == [("skipped", OPTED_OUT)]
        assert _rows(rig.db, "SELECT outcome, detail FROM attempts ORDER BY id") == [
            ("policy_send_at", "deferred to 2026-12-04 17:00 GMT: rule delay 3600s"),
            ("policy_skip", OPTED_OUT)]
        assert rig.twilio.accepted == []

        start = await rig.post("/twilio/inbound", inbound_form("SM2", "START"))
        assert start.status == 200
        ami.released.set()  # her next call
        async with asyncio.timeout(30):
            await rig.daemon.wait_until(_states_are(rig.db, {"skipped": 1, "deferred": 1}))
        await _come_due(rig, clock, {"skipped": 1, "sent": 1})
    (sent,) = rig.twilio.accepted
    assert sent.to == CUSTOMER
    assert sent.body.startswith("Thanks for calling, Zoë;")
    assert sent.body.endswith(f"\n{FOOTER}")
    assert _rows(rig.db, "SELECT number, action, source FROM suppression_log ORDER BY id") == [
        (CUSTOMER, "add", "sms"), (CUSTOMER, "remove", "sms")]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def _scrape(rig: WebRig) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with rig.http.get(rig.base + "/metrics") as answer:
        assert answer.status == 200
        return _samples(await answer.text())


async def _hold_for_a_coupon(store: Store, now: float) -> None:
    """A message whose pool `spring` has no code: held until `coupons load`."""
    renderer = Renderer({"offer": TemplateConfig("offer", "Code: {{ coupon('spring') }}")})
    planned = PlannedMessage("offer", "customer", CUSTOMER, "twilio", "offer",
                             renderer.render("offer", {}))
    assert await store.record_call(_call("coupon.1", CUSTOMER), CUSTOMER, [planned], now)


async def test_metrics_show_the_guard_its_trips_and_what_is_held(tmp_path: Path) -> None:
    clock = FakeClock()
    async with deferred_rig(tmp_path, clock) as (rig, _):
        before = await _scrape(rig)
        assert before[("hangupsms_guard_tripped", ())] == 0
        assert before[("hangupsms_guard_trips_total", ())] == 0
        assert before[("hangupsms_messages_held", (("reason", "guard"),))] == 0

        store, daemon = rig.daemon.store, rig.daemon
        assert store is not None and daemon.pipeline is not None
        policy = PolicyStore(store)
        await policy.trip("a test burst", clock())
        await _hold_for_a_coupon(store, clock())
        # A missed call now: its two texts (customer and manager) meet the tripped guard.
        missed = dataclasses.replace(only_call(daemon.cfg, "c"), linkedid="missed.1")
        await daemon.pipeline.record([missed])
        async with asyncio.timeout(30):
            await daemon.wait_until(_states_are(rig.db, {"deferred": 1, "held": 3}))
        tripped = await _scrape(rig)
        assert tripped[("hangupsms_guard_tripped", ())] == 1
        assert tripped[("hangupsms_guard_trips_total", ())] == 1
        assert tripped[("hangupsms_messages_held", (("reason", "guard"),))] == 2
        assert tripped[("hangupsms_messages_held", (("reason", "coupon"),))] == 1
        assert tripped[("hangupsms_messages", (("state", "held"),))] == 3

        await policy.release(clock(), discard=True)
        released = await _scrape(rig)
        assert released[("hangupsms_guard_tripped", ())] == 0
        assert released[("hangupsms_guard_trips_total", ())] == 1
        assert released[("hangupsms_messages_held", (("reason", "guard"),))] == 0
        assert released[("hangupsms_messages_held", (("reason", "coupon"),))] == 1
