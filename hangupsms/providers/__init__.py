"""SMS providers: one `SmsProvider` each; the rest of hangupsms sees only this port."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Protocol, TextIO

from hangupsms.config import ProviderConfig
from hangupsms.models import LookupResult, OutboundMessage, SendResult

if TYPE_CHECKING:
    from hangupsms.providers.amigsm import AmiActions


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


def build_provider(
    cfg: ProviderConfig, *, console: TextIO | None = None,
    ami: Mapping[str, AmiActions] | None = None,
) -> SmsProvider:
    """The provider a `providers:` entry describes; `ami` holds the daemon's connections
    by PBX name (an ami-gsm provider without one cannot send)."""
    if cfg.kind == "console":
        from hangupsms.providers.console import ConsoleProvider

        return ConsoleProvider(cfg.name, console)
    if cfg.kind == "twilio":
        from hangupsms.providers.twilio import TwilioProvider

        return TwilioProvider(cfg, lookup_limit=cfg.lookup_limit)
    if cfg.kind == "http":
        from hangupsms.providers.http import HttpGatewayProvider

        return HttpGatewayProvider(cfg)
    if cfg.kind == "ami-gsm":
        from hangupsms.providers.amigsm import AmiGsmProvider

        return AmiGsmProvider(cfg, (ami or {}).get(cfg.pbx))
    raise ValueError(f"unknown provider kind {cfg.kind!r}")
