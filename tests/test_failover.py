"""Provider failover: the real Twilio client against the fake Twilio, then the real http
gateway provider against a loopback gateway, over one real outbox on a fake clock."""

from __future__ import annotations

import asyncio
import io
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from hangupsms.cli import EXIT_OK, main
from hangupsms.config import ConfigError, ProviderConfig, parse_config
from hangupsms.dispatch import Dispatcher, RetryPolicy
from hangupsms.providers.http import HttpGatewayProvider
from hangupsms.schema import MIGRATIONS, SCHEMA_VERSION
from hangupsms.store import Store
from tests.faketwilio import Scripted
from tests.outboxrig import BODY, TO, Rig, open_rig
from tests.test_config import BASE, line_of
from tests.test_http_provider import Answer, FakeGateway


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_rig(tmp_path, provider_timeout=0.2) as opened:
        yield opened


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    server = await FakeGateway().start()
    yield server
    await server.stop()


@pytest.fixture
async def http(gateway: FakeGateway) -> AsyncIterator[HttpGatewayProvider]:
    cfg = ProviderConfig(name="gateway", kind="http", url=f"{gateway.url}/api/send",
                         form={"to": "{{ to }}", "text": "{{ body }}"}, timeout=5.0)
    provider = HttpGatewayProvider(cfg)
    yield provider
    await provider.close()


def _dispatcher(rig: Rig, http: HttpGatewayProvider, **twilio_policy: Any) -> Dispatcher:
    """Twilio with `twilio_policy`, the gateway with the defaults; unpaced, fixed jitter."""
    return Dispatcher(
        rig.store, {"twilio": rig.provider, "gateway": http}, {},
        policies={"twilio": RetryPolicy(**twilio_policy)},
        clock=rig.clock, rng=random.Random(7),
    )


def _texts(gateway: FakeGateway) -> list[tuple[str, str]]:
    return [(seen.body.decode(), seen.path) for seen in gateway.seen]


async def test_throttled_until_the_budget_is_spent_then_the_next_provider_sends_once(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    rig.fake.script.extend([Scripted(status=429, code=20429, headers={"Retry-After": "5"})] * 2)
    message_id = await rig.add_message(fallbacks=("gateway",))
    dispatcher = _dispatcher(rig, http, max_attempts=2)
    with capture_logs() as logs:
        await dispatcher.drain()
        assert rig.row(message_id)["state"] == "pending"  # twilio's budget is not spent yet
        rig.clock.advance(5.0)
        await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["provider"], row["attempts"]) == ("sent", "gateway", 3)
    assert (rig.fake.requests, rig.fake.accepted) == (2, [])
    assert len(gateway.seen) == 1
    assert await rig.outcomes(message_id) == ["throttled", "failover", "accepted"]
    failover = (await rig.store.attempts(message_id))[1]
    assert failover.detail.startswith("twilio -> gateway: retry budget of 2 attempts spent")
    assert [e["next_provider"] for e in logs if e["event"] == "sms.failover"] == ["gateway"]
    shown = await rig.store.history(linkedid="1796400000.1")
    assert [(m.provider, m.state) for m in shown] == [("gateway", "sent")]


async def test_503_fails_over_only_after_each_lookup_proves_it_absent(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    rig.fake.script.extend([Scripted(status=503)] * 2)
    message_id = await rig.add_message(fallbacks=("gateway",))
    dispatcher = _dispatcher(rig, http, max_attempts=2, lookup_settle=10.0)
    await dispatcher.drain()
    assert rig.row(message_id)["state"] == "unknown"
    rig.clock.advance(5.0)
    await dispatcher.drain()  # the lookup is not due: neither resent nor handed over
    assert (rig.row(message_id)["state"], gateway.seen) == ("unknown", [])
    rig.clock.advance(5.0)
    await dispatcher.drain()  # proved absent: twilio again (budget left), 503 again
    assert (rig.row(message_id)["state"], rig.fake.requests, gateway.seen) == ("unknown", 2, [])
    rig.clock.advance(10.0)
    await dispatcher.drain()  # proved absent, budget spent: the gateway sends it
    row = rig.row(message_id)
    assert (row["state"], row["provider"]) == ("sent", "gateway")
    assert (rig.fake.requests, rig.fake.accepted, len(gateway.seen)) == (2, [], 1)
    assert await rig.outcomes(message_id) == [
        "ambiguous", "lookup_not_found", "ambiguous", "failover", "accepted"]


async def test_an_opted_out_recipient_fails_and_no_other_provider_is_tried(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    rig.fake.script.append(Scripted(status=400, code=21610))
    message_id = await rig.add_message(fallbacks=("gateway",))
    dispatcher = _dispatcher(rig, http)
    await dispatcher.drain()
    rig.clock.advance(3_600.0)
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["provider"], row["error_code"]) == ("failed", "twilio", "21610")
    assert gateway.seen == []
    assert await rig.outcomes(message_id) == ["rejected"]


async def test_accepted_then_timed_out_is_found_and_never_handed_over(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    rig.fake.script.append(Scripted(accept=True, hang=30.0))
    message_id = await rig.add_message(fallbacks=("gateway",))
    dispatcher = _dispatcher(rig, http, max_attempts=1, lookup_settle=10.0)
    await dispatcher.drain()
    assert rig.row(message_id)["state"] == "unknown"
    rig.clock.advance(10.0)
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["provider"]) == ("sent", "twilio")
    assert row["provider_id"] == rig.fake.accepted[0].sid
    assert (rig.fake.requests, len(rig.fake.accepted), gateway.seen) == (1, 1, [])
    assert await rig.outcomes(message_id) == ["ambiguous", "lookup_found"]


async def test_an_ambiguous_send_the_lookup_cannot_settle_is_never_handed_over(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    rig.fake.script.append(Scripted(status=503))
    rig.fake.list_script.extend([Scripted(status=500)] * 3)
    message_id = await rig.add_message(fallbacks=("gateway",))
    dispatcher = _dispatcher(rig, http, max_attempts=1, lookup_settle=1.0, max_lookups=2,
                             lookup_delay=1.0)
    for _ in range(4):
        rig.clock.advance(10.0)
        await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["provider"]) == ("unknown", "twilio")
    assert "check the provider's records" in row["reason"]
    assert gateway.seen == []


async def test_wrong_twilio_credentials_hand_the_message_to_the_gateway(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    rig.fake.auth_token = "rotated"
    message_id = await rig.add_message(fallbacks=("gateway",))
    dispatcher = _dispatcher(rig, http)
    await dispatcher.drain()
    row = rig.row(message_id)
    assert (row["state"], row["provider"]) == ("sent", "gateway")
    assert rig.fake.accepted == []
    assert len(gateway.seen) == 1 and f"text={BODY[:6]}" in gateway.seen[0].body.decode()
    attempts = await rig.store.attempts(message_id)
    assert [(a.outcome, a.error_code) for a in attempts] == [
        ("failover", "20003"), ("accepted", None)]
    assert attempts[0].detail.startswith("twilio -> gateway: refused: HTTP 401 code 20003")


async def test_every_provider_refusing_fails_the_message_at_the_last_one(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    rig.fake.auth_token = "rotated"
    gateway.script.append(Answer(status=403, body="bad key"))
    message_id = await rig.add_message(fallbacks=("gateway",))
    await _dispatcher(rig, http).drain()
    row = rig.row(message_id)
    assert (row["state"], row["provider"], row["error_code"]) == ("failed", "gateway", "403")
    assert await rig.outcomes(message_id) == ["failover", "refused"]


async def test_an_unconfigured_first_provider_hands_over_and_the_budget_is_per_provider(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    message_id = await rig.add_message(fallbacks=("gateway",))
    gateway.script.append(Answer(status=429, body="slow down", headers={"Retry-After": "1"}))
    dispatcher = Dispatcher(rig.store, {"gateway": http}, {}, clock=rig.clock,
                            policy=RetryPolicy(max_attempts=2), rng=random.Random(7))
    await dispatcher.drain()
    row = rig.row(message_id)
    # The send through a missing provider counts for the message, not the gateway's budget.
    assert (row["state"], row["provider"], row["attempts"]) == ("pending", "gateway", 2)
    rig.clock.advance(1.0)
    await dispatcher.drain()
    assert (rig.row(message_id)["state"], len(gateway.seen)) == ("sent", 2)
    assert (await rig.store.attempts(message_id))[0].detail == (
        "twilio -> gateway: provider 'twilio' is not configured")


async def test_a_message_too_old_is_dead_and_not_handed_over(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    message_id = await rig.add_message(to=TO, fallbacks=("gateway",))
    rig.clock.advance(7_200.0)
    await _dispatcher(rig, http, max_age=3_600.0).drain()
    assert (rig.row(message_id)["state"], gateway.seen) == ("dead", [])


# The base configuration with a second provider.
TWO = BASE.replace("templates:", "  log:\n    kind: console\ntemplates:", 1)


def _with_via(via: str) -> str:
    return TWO.replace("via: twilio}", f"via: {via}}}", 1)


def test_a_rule_names_its_providers_in_failover_order() -> None:
    rule = parse_config(_with_via("[twilio, log]"), "test.yaml", environ={}).rules[0]
    assert rule.send.via == ("twilio", "log")
    assert parse_config(TWO, "test.yaml", environ={}).rules[0].send.via == ("twilio",)


@pytest.mark.parametrize(("via", "path", "message"), [
    ("[twilio, sms]", "rules[0].send.via[1]", "unknown provider 'sms'"),
    ("[twilio, log, twilio]", "rules[0].send.via[2]", "provider 'twilio' is named twice"),
    ("[]", "rules[0].send.via", "the list is empty"),
])
def test_a_bad_provider_list_names_the_item_and_its_line(
    via: str, path: str, message: str
) -> None:
    text = _with_via(via)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", environ={})
    error = caught.value
    assert (error.path, error.line) == (path, line_of(text, f"via: {via}"))
    assert message in error.message


def test_check_prints_each_rules_failover_order(tmp_path: Path) -> None:
    path = tmp_path / "hangupsms.yaml"
    path.write_text(_with_via("[twilio, log]"), encoding="utf-8")
    out = io.StringIO()
    assert main(["check", "-c", str(path)], out=out) == EXIT_OK
    assert "thanks via twilio -> log (failover order)" in out.getvalue()


async def test_pacing_follows_the_provider_that_now_holds_the_message(
    rig: Rig, gateway: FakeGateway, http: HttpGatewayProvider
) -> None:
    rig.fake.auth_token = "rotated"
    message_id = await rig.add_message(fallbacks=("gateway",))
    # Twilio's next slot is 1000 s away after its one try: were the hand-over paced as
    # Twilio, the gateway's send would wait that long.
    dispatcher = Dispatcher(rig.store, {"twilio": rig.provider, "gateway": http},
                            {"twilio": 0.001}, clock=rig.clock, rng=random.Random(7))
    async with asyncio.timeout(5):
        await dispatcher.drain()
    assert (rig.row(message_id)["state"], len(gateway.seen)) == ("sent", 1)


async def test_a_message_stored_before_failover_existed_is_sent_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:-1]:
            db.executescript(script)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
        db.execute("INSERT INTO calls (pbx, linkedid, direction, customer_number, customer_name,"
                   " answered, disposition, talk_seconds, wait_seconds, variables, facts,"
                   " started_at, ended_at, end_reason, recorded_at) VALUES ('lab', '1.1',"
                   " 'inbound', '', '', 1, 'answered', 1, 1, '{}', '{}', 1, 2, 'x', 2)")
        db.execute("INSERT INTO messages (call_id, rule, recipient, to_number, provider,"
                   " template, body, state, attempts, send_at, created_at, updated_at)"
                   " VALUES (1, 'thanks', 'customer', ?, 'twilio', 't', 'hi', 'pending', 3,"
                   " 0, 0, 0)", (TO,))
    store = await Store.open(path)
    try:
        (message,) = await store.claim_due(10.0)
    finally:
        await store.close()
    assert (message.provider, message.fallbacks, message.attempts) == ("twilio", (), 4)
    assert message.provider_attempts == 4  # every earlier try counts against its budget


async def test_the_next_provider_backs_off_from_its_own_first_attempt(rig: Rig) -> None:
    closed = await FakeGateway().start()
    await closed.stop()  # connections to it are refused
    cfg = ProviderConfig(name="gateway", kind="http", url=f"{closed.url}/api/send",
                         form={"to": "{{ to }}", "text": "{{ body }}"}, timeout=5.0)
    unreachable = HttpGatewayProvider(cfg)
    rig.fake.auth_token = "rotated"
    message_id = await rig.add_message(fallbacks=("gateway",))
    try:
        await _dispatcher(rig, unreachable).drain()
    finally:
        await unreachable.close()
    row = rig.row(message_id)
    assert (row["state"], row["provider"], row["attempts"]) == ("pending", "gateway", 2)
    # Its first retry waits at most base_delay (2 s), not the doubled wait of a second try.
    assert 0 < row["send_at"] - rig.clock() < 2.0


def test_preview_shows_the_providers_a_message_would_go_through(tmp_path: Path) -> None:
    fixtures = Path(__file__).parent / "fixtures" / "ami"
    raw: Any = yaml.safe_load((fixtures / "reference.yaml").read_text(encoding="utf-8"))
    raw["database"] = str(tmp_path / "h.db")
    raw["providers"]["log"] = {"kind": "console"}
    raw["rules"][1]["send"]["via"] = ["twilio", "log"]
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    out = io.StringIO()
    assert main(["preview", "-c", str(path), str(fixtures / "h_unicode.ami")], out=out) == EXIT_OK
    assert "send thanks -> +447700900123 via twilio -> log (" in out.getvalue()
