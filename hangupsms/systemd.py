"""systemd's notify protocol (Type=notify, WatchdogSec) without a library: one datagram each.

See sd_notify(3): the service manager passes a datagram socket in $NOTIFY_SOCKET (a path,
or an abstract name starting with `@`) and, with WatchdogSec=, the interval in
$WATCHDOG_USEC for the process $WATCHDOG_PID (when set).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS=…; a no-op outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET", "")
        self.watchdog_interval = _watchdog_interval(env)
        self.sent: list[str] = []  # what was sent, for `doctor` and tests

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        """Send one message of `KEY=value` lines; False (and a log line) when it failed."""
        if not self.address:
            return False
        message = "\n".join(fields)
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            log.warning("systemd.notify_failed", error=str(exc), message=fields[0])
            return False
        self.sent.append(message)
        return True


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of WatchdogSec (as sd_watchdog_enabled advises), or None when not asked for."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process of the unit
    return int(usec) / 2_000_000
