"""Secrets stay secret: not in `check` output, config errors or the daemon's log; a config file
that spells them out and others can read is flagged."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from hangupsms import logs
from hangupsms.cli import EXIT_OK, main
from hangupsms.config import ConfigError, load_config, parse_config
from hangupsms.replay import AmiReplayServer
from hangupsms.secrecy import exposure_warning, literal_secrets, secret_values
from tests.lab import FIXTURES, SECRET, TOKEN, USER, fake_twilio, lab_config, start_daemon_process

GATEWAY_TOKEN = "gw-bearer-0123456789"
GATEWAY_KEY = "gw-query-key-987"


def reference(tmp_path: Path, mode: int, **changes: Any) -> Path:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["database"] = str(tmp_path / "h.db")
    raw["providers"]["gateway"] = {
        "kind": "http", "url": "https://sms.example.com/send",
        "headers": {"Authorization": f"Bearer {GATEWAY_TOKEN}", "Accept": "application/json"},
        "query": {"api_key": GATEWAY_KEY, "to": "{{ to }}", "text": "{{ body }}"},
    }
    raw.update(changes)
    path = tmp_path / "hangupsms.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    path.chmod(mode)
    return path


def run_check(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    return main(["check", "-c", str(path)], out=out), out.getvalue()


def test_check_flags_a_world_readable_file_with_written_out_secrets_but_never_prints_them(
    tmp_path: Path,
) -> None:
    code, out = run_check(reference(tmp_path, 0o644))
    assert code == EXIT_OK
    assert "readable by its group and everyone (mode 0644)" in out
    for path in ("pbx[0].secret", "providers.twilio.auth_token",
                 "providers.gateway.headers.Authorization", "providers.gateway.query.api_key"):
        assert path in out
    assert "headers.Accept" not in out and "query.to" not in out
    assert "${VAR}" in out and "LoadCredential=" in out
    for secret in (SECRET, TOKEN, GATEWAY_TOKEN, GATEWAY_KEY):
        assert secret not in out


def test_check_is_quiet_for_a_private_file_or_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "warning" not in run_check(reference(tmp_path, 0o600))[1]
    monkeypatch.setenv("AMI_SECRET", SECRET)
    monkeypatch.setenv("TWILIO_TOKEN", TOKEN)
    path = reference(tmp_path, 0o644, providers={"twilio": {
        "kind": "twilio", "account_sid": "AC" + "0" * 32, "auth_token": "${TWILIO_TOKEN}",
        "from": "+447700900000"}})
    text = path.read_text(encoding="utf-8").replace(SECRET, "${AMI_SECRET}")
    path.write_text(text, encoding="utf-8")
    code, out = run_check(path)
    assert code == EXIT_OK and "warning" not in out


def test_group_readable_only_names_the_group(tmp_path: Path) -> None:
    warning = exposure_warning(reference(tmp_path, 0o640))
    assert warning is not None and "readable by its group (mode 0640)" in warning


def test_literal_secrets_knows_a_password_in_a_url_and_a_literal_dollar() -> None:
    text = """
pbx: [{name: a, username: u, secret: "$${not a reference}"}]
providers:
  gw: {kind: http, url: "https://user:pw1234@sms.example.com/x?token=${TOKEN}"}
  gw2: {kind: http, url: "https://sms.example.com/x?token=abcd1234"}
"""
    assert literal_secrets(text) == ["pbx[0].secret", "providers.gw.url", "providers.gw2.url"]


def test_secret_values_cover_every_kind_of_secret(tmp_path: Path) -> None:
    values = secret_values(load_config(reference(tmp_path, 0o600)))
    assert {SECRET, TOKEN, f"Bearer {GATEWAY_TOKEN}", GATEWAY_TOKEN, GATEWAY_KEY} <= values
    assert "application/json" not in values and "{{ to }}" not in values


TOKEN_LINE = "    auth_token: reference-token"
BROKEN = [
    ("    secret: labsecret", "    secret: [labsecret]"),
    ("    secret: labsecret", "    secret: {labsecret: 1}"),
    ("    secret: labsecret", "    secret: labsecret\n    secret: labsecret2"),
    ("    secret: labsecret", '    secret: "labsecret'),
    (TOKEN_LINE, f"{TOKEN_LINE}\n    token: reference-token"),
    (TOKEN_LINE, "    auth_token: reference-token${UNSET_VARIABLE}"),
    (TOKEN_LINE, "    auth_token: reference-token${"),
]


@pytest.mark.parametrize(("old", "new"), BROKEN)
def test_config_errors_never_quote_a_secret(old: str, new: str) -> None:
    text = (FIXTURES / "reference.yaml").read_text(encoding="utf-8")
    assert old in text
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace(old, new), "h.yaml")
    message = str(caught.value)
    assert "h.yaml:" in message  # a real error, with its line
    assert "labsecret" not in message and "reference-token" not in message


def test_log_lines_redact_secrets_in_our_events_and_library_messages() -> None:
    stream = io.StringIO()
    logs.configure("info", stream, json=True)
    logs.redact(["hunter2-secret"])
    structlog.get_logger("t").warning("thing.failed", error="login hunter2-secret refused")
    logging.getLogger("somelib").warning("connecting with %s", "hunter2-secret")
    output = stream.getvalue()
    assert "hunter2-secret" not in output
    assert output.count("[redacted]") == 2


async def test_daemon_log_at_debug_never_holds_a_secret(tmp_path: Path) -> None:
    async with AmiReplayServer([FIXTURES / "a.ami"], username=USER, secret=SECRET) as ami, \
            fake_twilio() as twilio:
        # Twilio refuses this token: the failures are logged, the token must not be.
        config = lab_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url,
                            twilio={"auth_token": "wrong-token-4567"})
        process, log = await start_daemon_process(config, log_level="debug")
        try:
            async with asyncio.timeout(60):
                await log.until(lambda _: bool(log.events("sms.failed")))
        finally:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await log.until(lambda _: bool(log.events("daemon.stopped")))
                await process.wait()
    text = "\n".join(log.raw)
    assert "ami.ready" in text and "HTTP 401" in text
    assert SECRET not in text and "wrong-token-4567" not in text
    assert "[redacted]" not in text  # nothing even tried: the redactor is only a safety net


async def test_daemon_log_of_a_refused_login_never_holds_the_secret(tmp_path: Path) -> None:
    async with AmiReplayServer([], username=USER, secret="the-real-one") as ami, \
            fake_twilio() as twilio:
        config = lab_config(tmp_path, ami_port=ami.port, twilio_url=twilio.url)
        process, log = await start_daemon_process(config, log_level="debug")
        try:
            async with asyncio.timeout(60):
                await log.until(lambda _: bool(log.events("ami.login_failed")))
        finally:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await process.wait()
    assert SECRET not in "\n".join(log.raw) and "[redacted]" not in "\n".join(log.raw)
