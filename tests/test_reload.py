"""Re-reading the configuration (SIGHUP): valid changes apply to the next call, invalid refused."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import yaml
from structlog.testing import capture_logs

from hangupsms.config import load_config
from hangupsms.daemon import Daemon
from hangupsms.dispatch import Dispatcher
from hangupsms.pipeline import CallPipeline
from hangupsms.policystore import PolicyGate
from hangupsms.replay import AmiReplayServer
from hangupsms.store import Store
from tests.lab import SECRET, TRANSCRIPTS, USER, fake_twilio, lab_config, start_daemon_process
from tests.test_calls import load


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


async def test_a_valid_change_applies_to_the_next_call(tmp_path: Path) -> None:
    path = lab_config(tmp_path, ami_port=5038, twilio_url="http://127.0.0.1:9")
    daemon = Daemon(load_config(path), config_path=path)
    store = await Store.open(tmp_path / "h.db")
    try:
        pipeline = CallPipeline(daemon.cfg, store, journal=False)
        _edit(path, "Thanks for calling, {{ customer_name or 'there' }}.",
              "Cheers {{ customer_name }}!")
        with capture_logs() as logs:
            assert daemon.reload(pipeline)
        assert [e["event"] for e in logs] == ["config.reloaded"]
        calls = [c for e in load("h_unicode") for c in pipeline.feed(e, 0.0)]
        await pipeline.record(calls + pipeline.expire(float("inf")))
        (row,) = await store.history()
    finally:
        await store.close()
    assert row.body == 'Cheers Zoë; DROP TABLE "x" {{7*7}}! You spoke with agent1.'


async def test_an_invalid_change_is_refused_and_the_old_config_kept(tmp_path: Path) -> None:
    path = lab_config(tmp_path, ami_port=5038, twilio_url="http://127.0.0.1:9")
    daemon = Daemon(load_config(path), config_path=path)
    store = await Store.open(tmp_path / "h.db")
    try:
        pipeline = CallPipeline(daemon.cfg, store, journal=False)
        before = pipeline.cfg
        _edit(path, "min_talk_seconds", "min_talk_secs")
        with capture_logs() as logs:
            assert not daemon.reload(pipeline)
    finally:
        await store.close()
    assert pipeline.cfg is before and daemon.cfg is before
    (refused,) = [e for e in logs if e["event"] == "config.reload_refused"]
    assert "rules[1].when.min_talk_secs" in refused["error"]


async def test_connection_changes_need_a_restart_and_say_so(tmp_path: Path) -> None:
    path = lab_config(tmp_path, ami_port=5038, twilio_url="http://127.0.0.1:9")
    daemon = Daemon(load_config(path), config_path=path)
    store = await Store.open(tmp_path / "h.db")
    try:
        pipeline = CallPipeline(daemon.cfg, store, journal=False)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        raw["pbx"][0]["port"] = 5039
        raw["templates"]["missed"] = "We missed you."
        path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        with capture_logs() as logs:
            assert daemon.reload(pipeline)
    finally:
        await store.close()
    (warning,) = [e for e in logs if e["event"] == "config.reload_needs_restart"]
    assert warning["keys"] == ["pbx (connections)"]
    assert pipeline.cfg.pbx[0].port == 5038  # the connection stays as it is
    assert pipeline.cfg.templates["missed"].text == "We missed you."


async def test_sighup_reloads_without_dropping_the_ami_connection(tmp_path: Path) -> None:
    async with fake_twilio() as twilio, AmiReplayServer(
        TRANSCRIPTS[:1], username=USER, secret=SECRET
    ) as server:
        path = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url,
                          twilio={"rate": 100})
        process, log = await start_daemon_process(path)
        try:
            async with asyncio.timeout(30):
                await log.until(lambda _: bool(log.events("daemon.ready")))
                _edit(path, "min_talk_seconds", "min_talk_secs")
                process.send_signal(signal.SIGHUP)
                await log.until(lambda _: bool(log.events("config.reload_refused")))
                _edit(path, "min_talk_secs", "min_talk_seconds")
                process.send_signal(signal.SIGHUP)
                await log.until(lambda _: bool(log.events("config.reloaded")))
        finally:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    assert server.connections == 1  # the AMI link survived both reloads


async def test_a_policy_change_reaches_the_sender(tmp_path: Path) -> None:
    path = lab_config(tmp_path, ami_port=5038, twilio_url="http://127.0.0.1:9")
    daemon = Daemon(load_config(path), config_path=path)
    store = await Store.open(tmp_path / "h.db")
    try:
        pipeline = CallPipeline(daemon.cfg, store, journal=False)
        daemon.dispatcher = Dispatcher(store, {}, {}, gate=PolicyGate(store, daemon.cfg))
        path.write_text(path.read_text(encoding="utf-8")
                        + "policy: {guard: {per_prefix_hour: 7}}\n", encoding="utf-8")
        assert daemon.reload(pipeline)
    finally:
        await store.close()
    assert daemon.dispatcher.gate is not None
    assert daemon.dispatcher.gate.cfg.policy.guard.per_prefix_hour == 7
    assert pipeline.cfg.policy.guard.per_prefix_hour == 7
