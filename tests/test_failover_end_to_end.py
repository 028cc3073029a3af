"""`hangupsms run` as a subprocess whose Twilio credentials are wrong: every message goes
out through the rule's next provider, an http gateway on loopback, once."""

from __future__ import annotations

import asyncio
import io
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs

import yaml

from hangupsms.cli import EXIT_OK, main
from hangupsms.replay import AmiReplayServer
from tests.lab import (
    SECRET,
    TRANSCRIPTS,
    USER,
    expected_sent,
    fake_twilio,
    lab_config,
    start_daemon_process,
)
from tests.test_http_provider import FakeGateway


def _with_gateway(config: Path, url: str) -> Path:
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["providers"]["gateway"] = {"kind": "http", "url": f"{url}/api/send",
                                   "form": {"to": "{{ to }}", "text": "{{ body }}"}}
    for rule in raw["rules"]:
        rule["send"]["via"] = ["twilio", "gateway"]
    config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return config


async def test_run_with_refused_twilio_credentials_sends_everything_through_the_gateway(
    tmp_path: Path,
) -> None:
    wanted = expected_sent()
    gateway = await FakeGateway().start()
    try:
        async with fake_twilio() as twilio, AmiReplayServer(
            TRANSCRIPTS, username=USER, secret=SECRET
        ) as ami:
            config = _with_gateway(lab_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url,
                                              twilio={"auth_token": "rotated-token"}),
                                   gateway.url)
            process, log = await start_daemon_process(config)
            try:
                async with asyncio.timeout(60):
                    await log.until(lambda _: len(log.events("sms.sent")) >= sum(wanted.values()))
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                assert await process.wait() == 0
            assert twilio.accepted == []
            refused = twilio.requests
    finally:
        await gateway.stop()
    forms = [parse_qs(seen.body.decode()) for seen in gateway.seen]
    assert Counter((form["to"][0], form["text"][0]) for form in forms) == wanted
    assert refused == sum(wanted.values())  # one refused try each, never a retry
    assert {e["next_provider"] for e in log.events("sms.failover")} == {"gateway"}
    with sqlite3.connect(tmp_path / "h.db") as db:
        sent = db.execute("SELECT DISTINCT provider FROM messages WHERE state = 'sent'").fetchall()
        outcomes = db.execute("SELECT outcome, COUNT(*) FROM attempts WHERE outcome IN"
                              " ('failover', 'accepted') GROUP BY outcome").fetchall()
    assert sent == [("gateway",)]
    assert dict(outcomes) == {"failover": refused, "accepted": refused}
    out = io.StringIO()
    assert await asyncio.to_thread(main, ["history", "-c", str(config)], out=out) == EXIT_OK
    shown = out.getvalue().splitlines()
    assert "] via gateway attempts=2 Your appointment A-1042 is confirmed." in "\n".join(shown)
    assert not [line for line in shown if "[sent]" in line and "via gateway" not in line]


async def test_run_with_twilio_unreachable_spends_its_budget_then_the_modem_sends(
    tmp_path: Path,
) -> None:
    wanted = expected_sent()
    async with fake_twilio() as twilio:
        closed_url = twilio.url  # nothing listens there once it stops
    async with AmiReplayServer(TRANSCRIPTS, username=USER, secret=SECRET, modem=[]) as ami:
        config = lab_config(tmp_path, ami_port=ami.port, twilio_url=closed_url,
                            twilio={"max_attempts": 2, "base_delay": 0.01})
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        raw["providers"]["modem"] = {"kind": "ami-gsm", "device": "dongle0", "rate": 1000}
        for rule in raw["rules"]:
            rule["send"]["via"] = ["twilio", "modem"]
        config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False),
                          encoding="utf-8")
        process, log = await start_daemon_process(config)
        try:
            async with asyncio.timeout(60):
                await log.until(lambda _: len(log.events("sms.sent")) >= sum(wanted.values()))
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            assert await process.wait() == 0
    assert Counter((sms["Number"], sms["Message"]) for sms in ami.sms) == wanted
    retried = log.events("sms.retry_scheduled")
    assert len(retried) == sum(wanted.values())  # one retry each, then the budget is spent
    assert all(e["provider"] == "twilio" for e in retried)
    with sqlite3.connect(tmp_path / "h.db") as db:
        rows = db.execute("SELECT provider, attempts, attempts_before FROM messages"
                          " WHERE state = 'sent'").fetchall()
    assert set(rows) == {("modem", 3, 2)}
