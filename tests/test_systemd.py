"""systemd notify protocol: READY after login and database, a health-checked watchdog, STOPPING."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hangupsms.config import load_config
from hangupsms.daemon import Daemon
from hangupsms.replay import AmiReplayServer
from hangupsms.systemd import Notifier
from tests.lab import SECRET, TRANSCRIPTS, USER, fake_twilio, lab_config


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """The service manager's end: a datagram socket the daemon writes to."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


async def _messages(sock: socket.socket) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        yield (await loop.sock_recv(sock, 4096)).decode()


async def _until(messages: AsyncIterator[str], wanted: str, seen: list[str]) -> None:
    async for message in messages:
        seen.append(message)
        if wanted in message.splitlines():
            return


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.notify("READY=1") is False


def test_the_watchdog_interval_is_half_of_watchdogsec_and_for_this_process_only() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 1.0
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


async def test_ready_after_login_then_watchdog_then_stopping(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"}
    seen: list[str] = []
    messages = _messages(notify_socket)
    async with fake_twilio() as twilio, AmiReplayServer(
        TRANSCRIPTS[:1], username=USER, secret=SECRET
    ) as server:
        config = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url)
        daemon = Daemon(load_config(config), notifier=Notifier(env))
        runner = asyncio.create_task(daemon.run())
        try:
            async with asyncio.timeout(20):
                await _until(messages, "READY=1", seen)
                assert daemon.ready.is_set() and server.logins == 1
                await _until(messages, "WATCHDOG=1", seen)
                await _until(messages, "WATCHDOG=1", seen)  # and it keeps coming
        finally:
            daemon.stop.set()
            await runner
        async with asyncio.timeout(5):
            await _until(messages, "STOPPING=1", seen)
    assert seen[0].splitlines()[0] == "READY=1"  # nothing before the login

