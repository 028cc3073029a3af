"""The recorded lab calls as test scenery: config, expected messages, a daemon in the test loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import yaml

from hangupsms.calls import CallTracker, TrackerSettings
from hangupsms.config import load_config
from hangupsms.daemon import Daemon
from hangupsms.frames import Frame
from hangupsms.models import AmiEvent
from hangupsms.planner import plan
from hangupsms.render import Renderer
from tests.faketwilio import FakeTwilio

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
TRANSCRIPTS = sorted(FIXTURES.glob("*.ami"))
EXPECTED_MESSAGES: dict[str, list[dict[str, Any]]] = yaml.safe_load(
    (FIXTURES / "expected-messages.yaml").read_text(encoding="utf-8")
)
USER, SECRET = "hangupsms", "labsecret"  # the AMI login of reference.yaml
SID, TOKEN = "AC00000000000000000000000000000000", "reference-token"  # its Twilio account


def lab_config(
    tmp_path: Path, *, ami_port: int, twilio_url: str, name: str = "h.yaml",
    pbx: dict[str, Any] | None = None, twilio: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """reference.yaml with the fake servers' addresses filled in (and any overrides)."""
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw.update(extra or {})
    raw["pbx"][0].update(port=ami_port, **(pbx or {}))
    raw["providers"]["twilio"].update(api_url=twilio_url, **(twilio or {}))
    raw["database"] = str(tmp_path / "h.db")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def console_config(tmp_path: Path) -> Path:
    """reference.yaml printing its messages instead of sending them; database in tmp_path."""
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["database"] = str(tmp_path / "h.db")
    raw["providers"] = {"twilio": {"kind": "console"}}
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def expected_sent() -> Counter[tuple[str, str]]:
    """(recipient, body) of every message the reference config must send, with counts."""
    return Counter(
        (m["to"], m["body"])
        for calls in EXPECTED_MESSAGES.values() for call in calls for m in call["sent"]
    )


def expected_linkedids() -> set[str]:
    return {call["linkedid"] for calls in EXPECTED_MESSAGES.values() for call in calls}


@contextlib.asynccontextmanager
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    server = await FakeTwilio(SID, TOKEN).start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def running_daemon(config: Path, **options: Any) -> AsyncIterator[Daemon]:
    """A Daemon running in this event loop; stopped (and awaited) on the way out."""
    daemon = Daemon(load_config(config), **options)
    runner = asyncio.create_task(daemon.run())
    try:
        yield daemon
    finally:
        daemon.stop.set()
        await runner


class DaemonLog:
    """Reads the daemon's JSON log lines as they come, so tests await events, not time."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []

    async def until(self, predicate: Any) -> None:
        while not predicate(self.lines):
            line = await self._stream.readline()
            if not line:
                raise AssertionError("daemon log ended:\n" + "\n".join(self.raw[-30:]))
            text = line.decode("utf-8", "replace").strip()
            self.raw.append(text)
            if text.startswith("{"):
                self.lines.append(json.loads(text))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


async def start_daemon_process(config: Path, *, log_level: str = "info"
                               ) -> tuple[asyncio.subprocess.Process, DaemonLog]:
    """`hangupsms run -c config` as a child process, its JSON log lines readable as they come."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hangupsms", "--log-level", log_level, "run", "-c", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    return process, DaemonLog(process.stderr)


def planned_sends(config: Path, frames: Iterable[Frame]) -> Counter[tuple[str, str]]:
    """(recipient, body) of what `config` sends for `frames` when every event arrives.

    The oracle for runs that lose events: the same calls through the tracker and planner,
    in process, without the network, the outbox or any gap.
    """
    cfg = load_config(config)
    tracker = CallTracker(cfg.pbx[0].name, TrackerSettings.from_pbx(cfg.pbx[0]))
    renderer = Renderer.from_config(cfg)
    calls = []
    for frame in frames:
        headers = frame.as_dict()
        calls += tracker.feed(AmiEvent(tracker.pbx, headers["Event"], headers, 0.0), 0.0)
    calls += tracker.expire(float("inf"))
    return Counter((m.to, m.body.text) for call in calls for m in plan(call, cfg, renderer)
                   if m.skip_reason is None and m.body is not None)
