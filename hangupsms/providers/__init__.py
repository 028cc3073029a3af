"""SMS providers: one `SmsProvider` each; the rest of hangupsms sees only this port."""

from __future__ import annotations

from typing import Protocol, TextIO

from hangupsms.config import ProviderConfig
from hangupsms.models import OutboundMessage, SendResult


class SmsProvider(Protocol):
    """Sends one message; never raises for a provider's answer, only classifies it."""

    name: str

    async def send(self, message: OutboundMessage) -> SendResult: ...

    async def close(self) -> None: ...


def build_provider(cfg: ProviderConfig, *, console: TextIO | None = None) -> SmsProvider:
    """The provider a `providers:` entry describes."""
    if cfg.kind == "console":
        from hangupsms.providers.console import ConsoleProvider

        return ConsoleProvider(cfg.name, console)
    if cfg.kind == "twilio":
        from hangupsms.providers.twilio import TwilioProvider

        return TwilioProvider(cfg)
    raise ValueError(f"unknown provider kind {cfg.kind!r}")
