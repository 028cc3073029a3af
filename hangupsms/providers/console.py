"""A provider that prints each message: the demo and dry runs use it."""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import TextIO

from hangupsms.models import (
    LookupResult,
    LookupStatus,
    OutboundMessage,
    SendResult,
    SendStatus,
)


class ConsoleProvider:
    """Writes `SMS to <number> [rule]: <text>` lines; always accepted."""

    def __init__(self, name: str, out: TextIO | None = None) -> None:
        self.name = name
        self._out = out
        self._count = 0

    async def send(self, message: OutboundMessage) -> SendResult:
        self._count += 1
        out = self._out if self._out is not None else sys.stdout
        out.write(f"SMS to {message.to} [{message.rule}]: {message.body}\n")
        out.flush()
        return SendResult(SendStatus.ACCEPTED, provider_id=f"console-{message.id}")

    async def lookup(
        self, message: OutboundMessage, since: float, *, exclude: Collection[str] = ()
    ) -> LookupResult:
        # send() never answers AMBIGUOUS; only a crash mid-print leaves one to check, and
        # printing it again is the right outcome for a console.
        return LookupResult(LookupStatus.NOT_FOUND, detail="the console keeps no records")

    async def close(self) -> None:
        return None
