"""The policy against a real outbox: pipeline, SQLite and the sender on one fake clock."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hangupsms.config import Config
from hangupsms.dispatch import Dispatcher
from hangupsms.models import CompletedCall, Direction, Disposition
from hangupsms.pipeline import CallPipeline
from hangupsms.policystore import PolicyGate, PolicyStore
from hangupsms.providers.console import ConsoleProvider
from hangupsms.store import Store
from tests.faketwilio import FakeClock
from tests.policylab import FRENCH_MOBILE, build, only_call, reference_with, rule

MANAGER = "+447700900777"


class Outbox:
    """A pipeline and a sender sharing one store, one console and one clock."""

    def __init__(self, cfg: Config, store: Store, clock: FakeClock) -> None:
        self.cfg, self.store, self.clock = cfg, store, clock
        self.console = io.StringIO()
        self.pipeline = CallPipeline(cfg, store, wall_clock=clock, journal=False)
        self.policy = PolicyStore(store)
        self.sender = Dispatcher(store, {"twilio": ConsoleProvider("twilio", self.console)},
                                 {}, clock=clock, gate=PolicyGate(store, cfg))

    def texts_to(self, number: str) -> list[str]:
        return [line for line in self.console.getvalue().splitlines()
                if line.startswith(f"SMS to {number} ")]

    def states(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        with sqlite3.connect(self.cfg.database) as db:
            return {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
                "SELECT c.linkedid, m.rule, m.state, m.reason FROM messages m"
                " JOIN calls c ON c.id = m.call_id")}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def outbox_for(raw: dict[str, Any], tmp_path: Path,
                     clock: FakeClock) -> AsyncIterator[Outbox]:
    cfg = build(raw, tmp_path)
    store = await Store.open(cfg.database)
    try:
        yield Outbox(cfg, store, clock)
    finally:
        await store.close()


@pytest.fixture
async def delayed(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Outbox]:
    """The reference rules; the missed-call text waits ten minutes."""
    raw = reference_with()
    rule(raw, "missed")["send"]["delay"] = "10m"
    async for outbox in outbox_for(raw, tmp_path, clock):
        yield outbox


async def test_a_stop_added_while_a_text_waits_stops_it(delayed: Outbox,
                                                        clock: FakeClock) -> None:
    missed = only_call(delayed.cfg, "c")
    await delayed.pipeline.record([missed])
    assert delayed.states()[(missed.linkedid, "missed")][0] == "deferred"
    await delayed.sender.drain()
    assert len(delayed.texts_to(MANAGER)) == 1 and not delayed.texts_to(FRENCH_MOBILE)
    await delayed.policy.suppressions.add(FRENCH_MOBILE, reason="STOP", source="test",
                                          now=clock())
    clock.advance(601)
    await delayed.sender.drain()
    assert not delayed.texts_to(FRENCH_MOBILE)
    assert delayed.states()[(missed.linkedid, "missed")] == (
        "skipped", "opted out (suppression list)")


async def test_the_waiting_text_goes_out_when_nothing_changed(delayed: Outbox,
                                                              clock: FakeClock) -> None:
    await delayed.pipeline.record([only_call(delayed.cfg, "c")])
    clock.advance(599)
    await delayed.sender.drain()
    assert not delayed.texts_to(FRENCH_MOBILE)
    clock.advance(2)
    await delayed.sender.drain()
    assert len(delayed.texts_to(FRENCH_MOBILE)) == 1
    # `history` keeps why it waited.
    (row,) = [r for r in await delayed.store.history(number=FRENCH_MOBILE) if r.rule == "missed"]
    outcomes = [(a.outcome, a.detail) for a in await delayed.store.attempts(row.id)]
    assert outcomes[0][0] == "policy_send_at" and "rule delay 600s" in outcomes[0][1]
    assert outcomes[1][0] == "accepted" and row.state == "sent"


async def test_a_suppressed_number_is_skipped_at_planning(delayed: Outbox,
                                                          clock: FakeClock) -> None:
    await delayed.policy.suppressions.add(FRENCH_MOBILE, reason="STOP", source="test",
                                          now=clock())
    missed = only_call(delayed.cfg, "c")
    await delayed.pipeline.record([missed])
    assert delayed.states()[(missed.linkedid, "missed")] == (
        "skipped", "opted out (suppression list)")


async def test_an_answered_call_back_cancels_the_waiting_missed_call_text(
        delayed: Outbox, clock: FakeClock) -> None:
    missed = only_call(delayed.cfg, "c")
    await delayed.pipeline.record([missed])
    clock.advance(120)
    callback = only_call(delayed.cfg, "a", number=FRENCH_MOBILE, shift=120)
    await delayed.pipeline.record([callback])
    state, reason = delayed.states()[(missed.linkedid, "missed")]
    assert state == "cancelled" and reason is not None and callback.linkedid in reason
    clock.advance(3600)
    await delayed.sender.drain()
    # The callback's thank-you went out; the missed-call text never did.
    assert delayed.texts_to(FRENCH_MOBILE) == [
        f"SMS to {FRENCH_MOBILE} [thanks]: Thanks for calling, Alice. "
        "You spoke with Agent One."]
    history = await delayed.store.history(number=FRENCH_MOBILE)
    assert any(row.state == "cancelled" for row in history)


def copies(call: CompletedCall, count: int, prefix: str) -> list[CompletedCall]:
    """`count` copies of a recorded call, each with its own Linkedid and caller."""
    return [dataclasses.replace(call, linkedid=f"{call.linkedid}-{prefix}{i}",
                                customer_number=f"{prefix}{i:03d}") for i in range(count)]


async def test_the_guard_trips_on_a_prefix_burst_and_holds_until_released(
        tmp_path: Path, clock: FakeClock) -> None:
    raw = reference_with(policy={"guard": {"per_prefix_hour": 5, "prefix_digits": 6}})
    raw["rules"] = [rule(raw, "missed")]
    async for outbox in outbox_for(raw, tmp_path, clock):
        await outbox.pipeline.record(copies(only_call(outbox.cfg, "c"), 12, "+33612345"))
        await outbox.sender.drain()
        assert len(outbox.console.getvalue().splitlines()) == 5
        counts = await outbox.store.counts_by_state()
        assert counts == {"sent": 5, "held": 7}
        guard = await outbox.policy.guard()
        assert guard.tripped_at == clock() and guard.trips == 1
        assert "prefix +336123" in guard.reason
        # Another prefix is held too: a tripped guard stops everything until a human looks.
        await outbox.pipeline.record(copies(only_call(outbox.cfg, "c"), 1, "+33712345"))
        await outbox.sender.drain()
        assert (await outbox.store.counts_by_state())["held"] == 8
        clock.advance(60)
        assert await outbox.policy.release(clock(), discard=False) == 8
        await outbox.sender.drain()
        # Counting restarts at the release: five more, then the guard trips again.
        assert len(outbox.console.getvalue().splitlines()) == 5 + 5
        assert (await outbox.policy.guard()).trips == 2
        assert (await outbox.store.counts_by_state())["held"] == 3


async def test_an_incident_notice_goes_on_every_message_until_it_is_off(
        delayed: Outbox, clock: FakeClock) -> None:
    await delayed.policy.set_incident("Lines are down until 18:00.", clock())
    await delayed.pipeline.record([only_call(delayed.cfg, "a")])
    await delayed.sender.drain()
    assert delayed.console.getvalue() == (
        "SMS to +447700900123 [thanks]: Thanks for calling, Alice. You spoke with Agent One."
        "\nLines are down until 18:00.\n")
    (row,) = await delayed.store.history(number="+447700900123")
    assert row.body is not None and row.body.endswith("Lines are down until 18:00.")
    await delayed.policy.set_incident(None, clock())
    assert await delayed.policy.incident() is None


async def test_priorities_share_one_budget_across_calls(tmp_path: Path,
                                                        clock: FakeClock) -> None:
    """Three rules from three calls want one customer; a budget of 2 a day picks two."""
    raw = reference_with(policy={"budget": {"max": 2, "per": "24h"}})
    thanks = rule(raw, "thanks")
    raw["rules"] = [
        {"name": "survey", "priority": 1,
         "when": {"direction": "inbound", "disposition": "answered"},
         "send": {**thanks["send"], "delay": "1m", "expires_after": "1h"}},
        {"name": "thanks", "priority": 5, "when": {"direction": "outbound"},
         "send": {**thanks["send"], "delay": "2m"}},
        {"name": "appointment", "priority": 10, "when": {"disposition": "busy"},
         "send": {**thanks["send"], "delay": "3m"}},
    ]
    async for outbox in outbox_for(raw, tmp_path, clock):
        answered = only_call(outbox.cfg, "a")
        calls = [answered,
                 dataclasses.replace(answered, linkedid="out", direction=Direction.OUTBOUND),
                 dataclasses.replace(answered, linkedid="busy", disposition=Disposition.BUSY)]
        await outbox.pipeline.record(calls)
        for _ in range(4):
            clock.advance(60)
            await outbox.sender.drain()
        states = {rule_: state for (_, rule_), (state, _) in outbox.states().items()}
        # The survey came due first, but the two higher priorities held the two slots.
        assert states == {"survey": "expired", "thanks": "sent", "appointment": "sent"}
        assert len(outbox.texts_to("+447700900123")) == 2


async def test_a_text_deferred_by_a_cap_for_a_week_is_not_too_old_to_send(
        tmp_path: Path, clock: FakeClock) -> None:
    """max_age (a day by default) counts from when the policy last made the message due."""
    raw = reference_with(policy={"budget": {"max": 1, "per": "7d"}})
    raw["rules"] = [rule(raw, "thanks")]
    async for outbox in outbox_for(raw, tmp_path, clock):
        first = only_call(outbox.cfg, "a")
        await outbox.pipeline.record([first])
        await outbox.sender.drain()
        clock.advance(3600)
        await outbox.pipeline.record([dataclasses.replace(first, linkedid="again")])
        await outbox.sender.drain()
        assert outbox.states()[("again", "thanks")][0] == "deferred"
        clock.advance(7 * 86_400 - 3600)
        await outbox.sender.drain()
        assert outbox.states()[("again", "thanks")] == ("sent", None)
        assert len(outbox.texts_to("+447700900123")) == 2
