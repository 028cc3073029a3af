"""ami-gsm in the configuration and in `hangupsms run`: the lab calls texted through a modem."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from hangupsms.config import ConfigError, parse_config
from hangupsms.replay import AmiReplayServer, ModemAnswer
from tests.lab import (
    FIXTURES,
    SECRET,
    TRANSCRIPTS,
    USER,
    expected_sent,
    start_daemon_process,
)

BASE = """\
pbx:
  - {name: pbx1, username: u, secret: s}
  - {name: pbx2, username: u, secret: s}
database: h.db
timezone: Europe/London
providers:
  modem:
    kind: ami-gsm
PROVIDER
templates: {t: "hello"}
rules:
  - {name: r, send: {template: t, to: "+447400123777", via: modem}}
"""


def parse(provider: str, *, one_pbx: bool = False) -> Any:
    text = BASE.replace("PROVIDER", provider)
    if one_pbx:
        text = text.replace("  - {name: pbx2, username: u, secret: s}\n", "")
    return parse_config(text, "h.yaml", {})


def test_an_ami_gsm_provider_is_read_with_its_modem() -> None:
    cfg = parse("    pbx: pbx2\n    device: dongle1\n    validity: 60\n    report: true\n"
                "    rate: 0.5")
    modem = cfg.providers["modem"]
    assert (modem.kind, modem.pbx, modem.module, modem.device) == (
        "ami-gsm", "pbx2", "dongle", "dongle1")
    assert (modem.validity, modem.report, modem.rate) == (60, True, 0.5)


def test_the_only_pbx_is_the_default() -> None:
    assert parse("    device: d0", one_pbx=True).providers["modem"].pbx == "pbx1"


@pytest.mark.parametrize(("provider", "path", "line", "words"), [
    ("    pbx: pbx3\n    device: d0", "providers.modem.pbx", 9, "unknown pbx 'pbx3'"),
    ("    device: d0", "providers.modem", 7, "name the pbx"),
    ("    pbx: pbx1", "providers.modem.device", 7, "missing"),
    ("    pbx: pbx1\n    device: ''", "providers.modem.device", 10, "must not be empty"),
    ("    pbx: pbx1\n    device: d0\n    module: huawei", "providers.modem.module", 11,
     "unknown module 'huawei'"),
    ("    pbx: pbx1\n    device: d0\n    module: quectel\n    validity: 5",
     "providers.modem.validity", 12, "only chan_dongle"),
    ("    pbx: pbx1\n    device: d0\n    validity: 0", "providers.modem.validity", 11,
     "at least 1"),
    ("    pbx: pbx1\n    device: d0\n    url: http://x", "providers.modem.url", 11,
     "unknown key 'url'"),
])
def test_config_errors_name_the_key_and_line(
    provider: str, path: str, line: int, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(provider)
    assert (caught.value.path, caught.value.line) == (path, line)
    assert words in caught.value.message


async def test_run_texts_the_lab_calls_through_the_fake_modem(tmp_path: Path) -> None:
    wanted = expected_sent()
    answers = [ModemAnswer("Error", "Device not connected / initialized / registered")]
    async with AmiReplayServer(TRANSCRIPTS, username=USER, secret=SECRET,
                               modem=answers) as ami:
        config = _modem_config(tmp_path, ami.port)
        process, log = await start_daemon_process(config)
        try:
            async with asyncio.timeout(60):
                await log.until(lambda _: ami.events_done.is_set())
                await log.until(lambda _: len(log.events("sms.sent")) >= sum(wanted.values()))
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            returncode = await process.wait()
    assert returncode == 0
    sent = Counter((sms["Number"], sms["Message"]) for sms in ami.sms)
    # The first try met an unregistered modem and was retried: one body is there twice.
    assert sum(sent.values()) == sum(wanted.values()) + 1
    assert set(sent) == set(wanted)
    assert {sms["Action"] for sms in ami.sms} == {"DongleSendSMS"}
    assert {sms["Device"] for sms in ami.sms} == {"dongle0"}
    assert len(log.events("sms.retry_scheduled")) == 1
    assert not [e for e in log.lines if e.get("level") in ("error", "critical")]
    with sqlite3.connect(tmp_path / "h.db") as db:
        rows = db.execute("SELECT state, provider_id FROM messages WHERE state != 'skipped'")
        found = rows.fetchall()
    assert len(found) == sum(wanted.values())
    assert all(state == "sent" and (pid or "").startswith("0x") for state, pid in found)


def _modem_config(tmp_path: Path, port: int) -> Path:
    """The lab's reference configuration with every rule sent through the modem."""
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["pbx"][0]["port"] = port
    raw["database"] = str(tmp_path / "h.db")
    raw["providers"] = {"modem": {"kind": "ami-gsm", "device": "dongle0", "rate": 1000,
                                  "base_delay": 0.01}}
    for rule in raw["rules"]:
        rule["send"]["via"] = "modem"
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
