"""SMS providers: one `SmsProvider` each; the rest of hangupsms sees only this port."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, TextIO

from hangupsms.config import ProviderConfig
from hangupsms.models import LookupResult, OutboundMessage, SendResult


class SmsProvider(Protocol):
    """Sends one message; never raises for a provider's answer, only classifies it."""

    name: str

    async def send(self, message: OutboundMessage) -> SendResult: ...

    async def lookup(
        self, message: OutboundMessage, since: float, *, exclude: Collection[str] = ()
    ) -> LookupResult:
        """Whether the provider accepted `message` at or after `since` (epoch seconds).

        Provider ids in `exclude` belong to our other messages and never match. NOT_FOUND
        must mean the provider's records prove it absent; when unsure, UNAVAILABLE.
        """
        ...

    async def close(self) -> None: ...


def build_provider(cfg: ProviderConfig, *, console: TextIO | None = None) -> SmsProvider:
    """The provider a `providers:` entry describes."""
    if cfg.kind == "console":
        from hangupsms.providers.console import ConsoleProvider

        return ConsoleProvider(cfg.name, console)
    if cfg.kind == "twilio":
        from hangupsms.providers.twilio import TwilioProvider

        return TwilioProvider(cfg, lookup_limit=cfg.lookup_limit)
    if cfg.kind == "http":
        from hangupsms.providers.http import HttpGatewayProvider

        return HttpGatewayProvider(cfg)
    raise ValueError(f"unknown provider kind {cfg.kind!r}")
