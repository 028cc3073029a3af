"""Resolving `unknown` messages: ask the provider, resend only what it proves it never took.

A message is `unknown` when its send was ambiguous (a timeout or 5xx after the request may
have reached the provider) or interrupted by a crash. Twilio's create is not idempotent, so
the only safe resend is one after the provider's own records show the message absent.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping

import structlog

from hangupsms.logs import mask_number
from hangupsms.models import LookupResult, LookupStatus, MessageState
from hangupsms.providers import SmsProvider
from hangupsms.retry import RetryPolicy
from hangupsms.store import LookupClaim, Store

log = structlog.get_logger(__name__)


class LookupResolver:
    """Checks due `unknown` messages with their provider; part of the one sender task."""

    def __init__(
        self, store: Store, providers: Mapping[str, SmsProvider],
        policy_for: Callable[[str], RetryPolicy], *, clock: Callable[[], float],
        rng: random.Random, batch: int, on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._policy_for = policy_for
        self._clock = clock
        self._rng = rng
        self._batch = batch
        self._on_progress = on_progress
        self.found = 0  # found at the provider: sent, without a resend
        self.dead = 0  # proved absent but out of attempts or too old
        self.abandoned = 0  # left `unknown` for a human after `max_lookups`

    async def resolve_due(self, stop: asyncio.Event | None = None) -> int:
        """Check every message whose lookup is due now; the number checked."""
        checked = 0
        while claims := await self._store.claim_unknown_due(self._clock(), self._batch):
            for index, claim in enumerate(claims):
                if stop is not None and stop.is_set():
                    rest = [c.message.id for c in claims[index:]]
                    await self._store.release_lookups(rest, self._clock())
                    return checked
                await self._resolve(claim)
                checked += 1
                self._on_progress()
        return checked

    async def _resolve(self, claim: LookupClaim) -> None:
        message = claim.message
        policy = self._policy_for(message.provider)
        bound = log.bind(
            message_id=message.id, rule=message.rule, to=mask_number(message.to),
            provider=message.provider, linkedid=message.call_linkedid, attempt=message.attempts,
        )
        provider = self._providers.get(message.provider)
        if provider is None:
            await self._abandon(claim, f"provider {message.provider!r} is not configured", bound)
            return
        asked_at = self._clock()
        exclude = await self._store.known_provider_ids(message.to, besides=message.id)
        since = claim.attempt_started_at - policy.clock_skew
        try:
            result = await provider.lookup(message, since, exclude=exclude)
        except Exception as exc:  # a provider bug must not kill the sender
            bound.exception("sms.lookup_error")
            result = LookupResult(LookupStatus.UNAVAILABLE, detail=f"{type(exc).__name__}: {exc}")
        settled_at = claim.settle_from + policy.lookup_settle
        if result.status is LookupStatus.FOUND:
            await self._found(claim, result, bound)
        elif result.status is LookupStatus.NOT_FOUND and asked_at >= settled_at:
            await self._absent(claim, result, policy, bound)
        elif result.status is LookupStatus.NOT_FOUND:
            # Too early to trust: the list may lag, the request may still be in flight.
            await self._finish(claim, MessageState.UNKNOWN, bound, outcome="lookup_too_early",
                               reason=result.detail, send_at=settled_at)
            bound.info("sms.lookup_too_early", lookup_in=round(settled_at - asked_at, 2))
        else:
            await self._inconclusive(claim, result, policy, bound)

    async def _found(
        self, claim: LookupClaim, result: LookupResult, bound: structlog.BoundLogger
    ) -> None:
        if await self._finish(claim, MessageState.SENT, bound, outcome="lookup_found",
                              reason=result.detail, provider_id=result.provider_id):
            self.found += 1
            bound.info("sms.sent", provider_id=result.provider_id, via="lookup")

    async def _absent(
        self, claim: LookupClaim, result: LookupResult, policy: RetryPolicy,
        bound: structlog.BoundLogger,
    ) -> None:
        message, now = claim.message, self._clock()
        deadline = policy.deadline(message)
        if deadline is not None and now >= deadline:
            reason = f"not accepted; older than max_age {policy.max_age:g}s"
        elif message.provider_attempts >= policy.max_attempts:
            reason = f"not accepted; retry budget of {policy.max_attempts} attempts spent"
            # Proved absent, so the rule's next provider cannot make it a double text.
            if await self._fail_over(claim, reason, bound):
                return
        else:
            if await self._finish(claim, MessageState.PENDING, bound, outcome="lookup_not_found",
                                  reason=result.detail, send_at=now):
                bound.info("sms.resend_scheduled", reason=result.detail)
            return
        if await self._finish(claim, MessageState.DEAD, bound, outcome="lookup_not_found",
                              reason=reason):
            self.dead += 1
            bound.error("sms.dead", reason=reason)

    async def _fail_over(
        self, claim: LookupClaim, reason: str, bound: structlog.BoundLogger
    ) -> bool:
        """Hand a `checking` message to the rule's next provider; False when it has none."""
        message = claim.message
        if not message.fallbacks:
            return False
        if await self._store.fail_over(message, self._clock(), from_state=MessageState.CHECKING,
                                       outcome="failover", reason=reason):
            bound.warning("sms.failover", next_provider=message.fallbacks[0], reason=reason)
        else:
            bound.error("outbox.state_conflict", expected="checking", outcome="failover")
        return True

    async def _inconclusive(
        self, claim: LookupClaim, result: LookupResult, policy: RetryPolicy,
        bound: structlog.BoundLogger,
    ) -> None:
        lookups = claim.lookups + 1
        if lookups >= policy.max_lookups:
            reason = f"{lookups} provider lookups inconclusive, last: {result.detail}"
            await self._abandon(claim, reason, bound)
            return
        delay = policy.lookup_backoff(lookups, self._rng)
        await self._finish(claim, MessageState.UNKNOWN, bound, outcome="lookup_unavailable",
                           reason=result.detail, send_at=self._clock() + delay, lookups=lookups)
        bound.info("sms.lookup_retry", reason=result.detail, delay=round(delay, 2))

    async def _abandon(self, claim: LookupClaim, reason: str, bound: structlog.BoundLogger) -> None:
        """No further lookup: the message stays `unknown` until a human checks the provider."""
        reason = f"{reason}; not resent: check the provider's records"
        if await self._finish(claim, MessageState.UNKNOWN, bound, outcome="lookup_abandoned",
                              reason=reason):
            self.abandoned += 1
            bound.error("sms.lookup_abandoned", reason=reason)

    async def _finish(
        self, claim: LookupClaim, state: MessageState, bound: structlog.BoundLogger, *,
        outcome: str, reason: str, provider_id: str | None = None, send_at: float | None = None,
        lookups: int | None = None,
    ) -> bool:
        done = await self._store.finish_lookup(
            claim.message.id, state, self._clock(), outcome=outcome, reason=reason,
            provider_id=provider_id, send_at=send_at, lookups=lookups,
        )
        if not done:
            bound.error("outbox.state_conflict", expected="checking", outcome=outcome)
        return done
