"""Two things hold a message: the fraud guard and an empty coupon pool. Each lets go its own."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hangupsms.cli import main
from hangupsms.config import Config, load_config
from hangupsms.dispatch import Dispatcher
from hangupsms.models import CompletedCall
from hangupsms.pipeline import CallPipeline
from hangupsms.policycli import EXIT_TRIPPED
from hangupsms.policystore import PolicyGate, PolicyStore
from hangupsms.providers.console import ConsoleProvider
from hangupsms.store import Store
from hangupsms.tracking import load_coupons, release_held
from tests.faketwilio import FakeClock
from tests.policylab import FRENCH_MOBILE, only_call, reference_with, rule

ALICE = "+447700900123"  # a.ami: answered; her thank-you carries a coupon code
COUPON_HELD = "coupon pool 'sorry' is empty"
GUARD_HELD = "the fraud guard is tripped: held for review"


@dataclass
class Rig:
    cfg: Config
    config: Path
    store: Store
    clock: FakeClock
    console: io.StringIO
    pipeline: CallPipeline
    sender: Dispatcher
    policy: PolicyStore

    async def cli(self, *argv: str) -> tuple[int, str]:
        """`hangupsms ARGV -c CONFIG` as a sysadmin runs it next to the daemon."""
        out = io.StringIO()
        command, *rest = argv
        code = await asyncio.to_thread(main, [command, "-c", str(self.config), *rest], out=out)
        return code, out.getvalue()

    def message(self, linkedid: str) -> tuple[str, str | None, str]:
        with sqlite3.connect(self.cfg.database) as db:
            row = db.execute("SELECT m.state, m.reason, m.body FROM messages m JOIN calls c"
                             " ON c.id = m.call_id WHERE c.linkedid = ?", (linkedid,)).fetchone()
        assert row is not None
        return row[0], row[1], row[2]

    async def missed_call(self, linkedid: str) -> CompletedCall:
        """c.ami again under its own Linkedid: a missed call, texted through the guard."""
        call = dataclasses.replace(only_call(self.cfg, "c"), linkedid=linkedid)
        await self.pipeline.record([call])
        await self.sender.drain()
        return call


async def open_rig(tmp_path: Path, *, missed: str | None = None) -> AsyncIterator[Rig]:
    """Rules thanks (with a code from pool `sorry`) and missed (`missed`: its template)."""
    raw = reference_with(database=str(tmp_path / "h.db"))
    raw["providers"] = {"twilio": {"kind": "console"}}
    raw["templates"]["thanks"] = "Thanks, {{ customer_name }}. Your code: {{ coupon('sorry') }}"
    if missed is not None:
        raw["templates"]["missed"] = missed
    raw["rules"] = [rule(raw, "thanks"), rule(raw, "missed")]
    config = tmp_path / "h.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    cfg = load_config(config)
    # Ahead of the CLI's own clock: what `guard release` queues at its now is due at ours.
    clock = FakeClock(time.time() + 3600)
    console = io.StringIO()
    store = await Store.open(cfg.database)
    try:
        yield Rig(cfg, config, store, clock, console,
                  CallPipeline(cfg, store, wall_clock=clock, journal=False),
                  Dispatcher(store, {"twilio": ConsoleProvider("twilio", console)}, {},
                             clock=clock, gate=PolicyGate(store, cfg)),
                  PolicyStore(store))
    finally:
        await store.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for opened in open_rig(tmp_path):
        yield opened


async def test_guard_release_leaves_a_coupon_held_message_held(rig: Rig) -> None:
    alice = only_call(rig.cfg, "a")
    await rig.pipeline.record([alice])
    assert rig.message(alice.linkedid)[:2] == ("held", COUPON_HELD)
    await rig.policy.trip("a test burst", rig.clock())
    await rig.missed_call("m1")
    assert rig.message("m1")[:2] == ("held", GUARD_HELD)
    assert await rig.policy.held_by_kind() == {"coupon": 1, "guard": 1}

    assert "held: 2 (coupon codes 1, fraud guard 1)\n" in (await rig.cli("stats"))[1]
    code, out = await rig.cli("guard", "status")
    assert code == EXIT_TRIPPED
    assert "1 message(s) held;" in out
    assert "1 other(s) wait for coupon codes" in out
    assert await rig.cli("guard", "release") == (
        0, "guard released; 1 held message(s) queued for sending\n")
    await rig.sender.drain()
    assert rig.message("m1")[0] == "sent"
    assert rig.message(alice.linkedid)[:2] == ("held", COUPON_HELD)

    await rig.policy.trip("another burst", rig.clock())
    await rig.missed_call("m2")
    assert await rig.cli("guard", "release", "--discard") == (
        0, "guard released; 1 held message(s) discarded\n")
    assert rig.message("m2")[:2] == ("skipped", "held by the fraud guard; discarded by cli")
    assert rig.message(alice.linkedid)[:2] == ("held", COUPON_HELD)
    await rig.sender.drain()
    assert [line.split(" [")[0] for line in rig.console.getvalue().splitlines()] == [
        f"SMS to {FRENCH_MOBILE}"]


async def test_coupons_load_leaves_a_guard_held_message_held(rig: Rig, tmp_path: Path) -> None:
    alice = only_call(rig.cfg, "a")
    await rig.pipeline.record([alice])
    await rig.policy.trip("a test burst", rig.clock())
    await rig.missed_call("m1")
    codes = tmp_path / "codes.txt"
    codes.write_text("SORRY-1\nSORRY-2\n", encoding="utf-8")

    code, out = await rig.cli("coupons", "load", "sorry", str(codes))
    assert code == 0
    assert out.endswith("1 held message(s) got their codes: the fraud guard is tripped, "
                        "they wait for `hangupsms guard release`\n")
    assert rig.message("m1")[:2] == ("held", GUARD_HELD)
    assert rig.message(alice.linkedid) == (
        "pending", None, "Thanks, Alice. Your code: SORRY-1")
    # Due now, but the guard is still tripped: the message now waits for the guard.
    await rig.sender.drain()
    assert rig.message(alice.linkedid)[:2] == ("held", GUARD_HELD)
    assert await rig.policy.held_by_kind() == {"guard": 2}
    assert rig.console.getvalue() == ""

    assert (await rig.cli("guard", "release"))[1].startswith("guard released; 2 held")
    await rig.sender.drain()
    assert rig.message(alice.linkedid)[0] == rig.message("m1")[0] == "sent"
    assert f"SMS to {ALICE} [thanks]: Thanks, Alice. Your code: SORRY-1\n" in (
        rig.console.getvalue())
    # Each step is in the history: the codes, the guard's hold, its release, the send (the
    # CLI's clock is not the test's, so their order is not compared).
    (row,) = await rig.store.history(linkedid=alice.linkedid)
    assert {(a.outcome, a.detail) for a in await rig.store.attempts(row.id)} == {
        ("coupon_codes", "codes taken from pool sorry"),
        ("policy_hold", GUARD_HELD),
        ("guard_release", "held by the fraud guard; released by cli"),
        ("accepted", ""),
    }


async def test_a_call_that_reaches_the_customer_cancels_either_kind_of_hold(
        tmp_path: Path) -> None:
    """A missed-call text held by the guard or for a code is pointless once they got through."""
    missed = reference_with()["templates"]["missed"] + " Code: {{ coupon('sorry') }}"
    async for rig in open_rig(tmp_path, missed=missed):
        await load_coupons(rig.store, "sorry", ["ONLY-1"], rig.clock())
        await rig.policy.trip("a test burst", rig.clock())
        await rig.missed_call("guard-held")  # took the one code; the guard holds it
        await rig.missed_call("coupon-held")  # no code left
        assert await rig.policy.held_by_kind() == {"coupon": 1, "guard": 1}

        answered = only_call(rig.cfg, "a", number=FRENCH_MOBILE, shift=3600)
        await rig.pipeline.record([answered])
        assert rig.message("coupon-held")[0] == rig.message("guard-held")[0] == "cancelled"
        # Only the answered call's own thank-you waits for a code now.
        assert rig.message(answered.linkedid)[:2] == ("held", COUPON_HELD)
        assert await rig.policy.held_by_kind() == {"coupon": 1}
        with sqlite3.connect(rig.cfg.database) as db:
            assert db.execute("SELECT COUNT(*) FROM held_coupons").fetchone() == (1,)
        # The next code goes to the thank-you; the cancelled text stays cancelled.
        await load_coupons(rig.store, "sorry", ["MORE-1"], rig.clock())
        assert await release_held(rig.store, rig.clock()) == 1
        assert rig.message(answered.linkedid)[2].endswith("Your code: MORE-1")
        assert rig.message("coupon-held")[0] == "cancelled"
