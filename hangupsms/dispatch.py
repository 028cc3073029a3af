"""The one sender task: claims due messages from the outbox, sends, records each outcome.

Each pass first resolves the `unknown` messages whose provider lookup is due (see
`recovery`), then sends due `pending` ones: a message interrupted by a crash is checked
with the provider before anything new is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping

import structlog

from hangupsms.config import Config
from hangupsms.logs import mask_number
from hangupsms.models import MessageState, OutboundMessage, SendResult, SendStatus
from hangupsms.policy import Verdict
from hangupsms.policystore import PolicyGate
from hangupsms.providers import SmsProvider
from hangupsms.recovery import LookupResolver
from hangupsms.retry import RetryPolicy
from hangupsms.store import Store

__all__ = ["Dispatcher", "RetryPolicy"]

log = structlog.get_logger(__name__)


class Dispatcher:
    """Owns sending. `wake()` after new rows are committed; `run()` until `stop` is set.

    `policy` applies to every provider without an entry in `policies` (provider name ->
    its own RetryPolicy); `batch` and `idle_poll` come from `policy`.
    """

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, SmsProvider],
        rates: Mapping[str, float],
        *,
        policy: RetryPolicy | None = None,
        policies: Mapping[str, RetryPolicy] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_progress: Callable[[], None] = lambda: None,
        gate: PolicyGate | None = None,
        on_latency: Callable[[str, float], None] = lambda provider, seconds: None,
    ) -> None:
        self._store = store
        # The policy's last word before each send (suppression, windows, caps, the guard);
        # None only where no configuration is at hand (tests of the sending machinery).
        self.gate = gate
        self._providers = providers
        self._intervals = {name: 1.0 / rate for name, rate in rates.items() if rate > 0}
        self._next_slot: dict[str, float] = {}
        self._policy = policy or RetryPolicy()
        self._policies = dict(policies or {})
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._wakeup = asyncio.Event()
        self._on_progress = on_progress
        self._on_latency = on_latency  # (provider, seconds) of each send: /metrics
        self._resolver = LookupResolver(
            store, providers, self.policy_for, clock=clock, rng=self._rng,
            batch=self._policy.batch, on_progress=on_progress,
        )
        self._sent = 0
        self._dead = 0
        self.alive = False

    @property
    def sent(self) -> int:
        """Messages the provider accepted, including those a lookup found accepted."""
        return self._sent + self._resolver.found

    @property
    def dead(self) -> int:
        """Messages given up: retry budget spent or older than `max_age`."""
        return self._dead + self._resolver.dead

    @property
    def abandoned(self) -> int:
        """Messages left `unknown` for a human after their lookups stayed inconclusive."""
        return self._resolver.abandoned

    def policy_for(self, provider: str) -> RetryPolicy:
        return self._policies.get(provider, self._policy)

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; the message in flight then finishes, the rest stay queued."""
        self.alive = True
        try:
            while not stop.is_set():
                self._wakeup.clear()
                await self._resolver.resolve_due(stop)
                if stop.is_set():
                    return
                batch = await self._store.claim_due(self._clock(), self._policy.batch)
                for index, message in enumerate(batch):
                    if stop.is_set():
                        await self._store.release([m.id for m in batch[index:]], self._clock())
                        return
                    await self._pace(message.provider, stop)
                    await self._send_one(message)
                if not batch:
                    await self._idle(stop)
        finally:
            self.alive = False

    async def drain(self) -> None:
        """Check and send everything due now, then return (`replay`); later work stays queued."""
        while True:
            await self._resolver.resolve_due()
            batch = await self._store.claim_due(self._clock(), self._policy.batch)
            if not batch:
                return
            for message in batch:
                await self._pace(message.provider, asyncio.Event())
                await self._send_one(message)

    async def _idle(self, stop: asyncio.Event) -> None:
        due = await self._store.next_wakeup()
        wait = self._policy.idle_poll
        if due is not None:
            wait = max(0.0, min(wait, due - self._clock()))
        waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            # gather, not suppress(CancelledError): a cancel of this task must propagate.
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _pace(self, provider: str, stop: asyncio.Event) -> None:
        """Queue, never fail, when a provider's rate (messages per second) is reached."""
        interval = self._intervals.get(provider)
        if interval is None:
            return
        now = self._clock()
        slot = max(now, self._next_slot.get(provider, now))
        self._next_slot[provider] = slot + interval
        if slot > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), slot - now)

    async def _send_one(self, message: OutboundMessage) -> None:
        provider = self._providers.get(message.provider)
        policy = self.policy_for(message.provider)
        bound = log.bind(
            message_id=message.id, rule=message.rule, to=mask_number(message.to),
            provider=message.provider, linkedid=message.call_linkedid, attempt=message.attempts,
        )
        deadline = policy.deadline(message)
        if deadline is not None and self._clock() >= deadline:
            reason = f"older than max_age {policy.max_age:g}s; never sent"
            await self._bury(message, reason, bound, outcome="expired")
            return
        if provider is None:
            reason = f"provider {message.provider!r} is not configured"
            if await self._fail_over(message, reason, bound):
                return
            await self._store.finish(message.id, MessageState.FAILED, self._clock(),
                                     outcome="no_provider", reason=reason)
            bound.error("sms.failed", reason="provider not configured")
            return
        if self.gate is not None:
            decision, message = await self.gate.admit(message, self._clock())
            if decision.verdict is not Verdict.SEND_NOW:
                self._on_progress()
                return
        # Committed before the request: after a crash, only this message needs a lookup.
        await self._store.begin_request(message.id, self._clock())
        started = time.monotonic()
        try:
            result = await provider.send(message)
        except Exception as exc:  # a provider bug must not kill the sender
            bound.exception("sms.provider_error")
            result = SendResult(SendStatus.AMBIGUOUS, detail=f"{type(exc).__name__}: {exc}")
        latency = round(time.monotonic() - started, 3)
        self._on_latency(message.provider, latency)
        await self._record(message, result, policy, bound.bind(latency=latency))
        self._on_progress()

    async def _record(
        self, message: OutboundMessage, result: SendResult, policy: RetryPolicy,
        bound: structlog.BoundLogger,
    ) -> None:
        now = self._clock()
        status = result.status
        if status is SendStatus.ACCEPTED:
            self._sent += 1
            await self._store.finish(message.id, MessageState.SENT, now, outcome=status.value,
                                     provider_id=result.provider_id)
            bound.info("sms.sent", provider_id=result.provider_id)
        elif status in (SendStatus.REJECTED, SendStatus.REFUSED):
            await self._fail(message, result, bound)
        elif status is SendStatus.AMBIGUOUS:
            # The provider may have accepted it: a resend could text the customer twice, so
            # its records are checked first, once they have settled.
            lookup_at = now + policy.lookup_settle
            if not await self._store.mark_unknown(
                message.id, now, outcome=status.value, lookup_at=lookup_at,
                reason=result.detail, error_code=result.error_code,
            ):
                bound.error("outbox.state_conflict", expected="sending", outcome=status.value)
            bound.warning("sms.unknown", error_code=result.error_code, reason=result.detail,
                          lookup_in=policy.lookup_settle)
        else:
            await self._retry_later(message, result, policy, bound)

    async def _fail(
        self, message: OutboundMessage, result: SendResult, bound: structlog.BoundLogger
    ) -> None:
        """REFUSED (the provider's own reason) goes to the rule's next provider, if any.

        REJECTED (the message or its recipient: opted out, invalid number) is never tried
        elsewhere: another provider would text the same person.
        """
        if result.status is SendStatus.REFUSED and await self._fail_over(
            message, f"refused: {result.detail}", bound, error_code=result.error_code
        ):
            return
        await self._store.finish(message.id, MessageState.FAILED, self._clock(),
                                 outcome=result.status.value, reason=result.detail,
                                 error_code=result.error_code)
        bound.warning("sms.failed", error_code=result.error_code, reason=result.detail)

    async def _retry_later(
        self, message: OutboundMessage, result: SendResult, policy: RetryPolicy,
        bound: structlog.BoundLogger,
    ) -> None:
        """THROTTLED or TRANSIENT: the provider did not take it; retry within budget and age."""
        now = self._clock()
        status = result.status
        if status is SendStatus.THROTTLED and result.retry_after is not None:
            delay = result.retry_after
        elif status is SendStatus.THROTTLED:
            delay = policy.throttle_delay
        else:
            delay = policy.backoff(message.provider_attempts, self._rng)
        deadline = policy.deadline(message)
        if message.provider_attempts >= policy.max_attempts:
            reason = f"retry budget of {policy.max_attempts} attempts spent: {result.detail}"
        elif deadline is not None and now + delay > deadline:
            reason = f"next try would pass max_age {policy.max_age:g}s: {result.detail}"
        else:
            await self._store.finish(
                message.id, MessageState.PENDING, now, outcome=status.value,
                reason=result.detail, error_code=result.error_code, send_at=now + delay,
            )
            bound.info("sms.retry_scheduled", status=status.value, delay=round(delay, 2))
            return
        # This provider cannot take it (in time): the next one sends it now, if any.
        if await self._fail_over(message, reason, bound, error_code=result.error_code):
            return
        await self._bury(message, reason, bound, outcome=status.value,
                         error_code=result.error_code)

    async def _fail_over(
        self, message: OutboundMessage, reason: str, bound: structlog.BoundLogger, *,
        error_code: str | None = None,
    ) -> bool:
        """Hand a `sending` message to the rule's next provider; False when it has none.

        Never for an ambiguous send: the provider may have taken it (see `recovery`).
        """
        if not message.fallbacks:
            return False
        if await self._store.fail_over(message, self._clock(), from_state=MessageState.SENDING,
                                       outcome="failover", reason=reason, error_code=error_code):
            bound.warning("sms.failover", next_provider=message.fallbacks[0], reason=reason)
        else:
            bound.error("outbox.state_conflict", expected="sending", outcome="failover")
        return True

    async def _bury(
        self, message: OutboundMessage, reason: str, bound: structlog.BoundLogger, *,
        outcome: str, error_code: str | None = None,
    ) -> None:
        """`dead`: counted and logged once; never sent again."""
        await self._store.finish(message.id, MessageState.DEAD, self._clock(), outcome=outcome,
                                 reason=reason, error_code=error_code)
        self._dead += 1
        bound.error("sms.dead", reason=reason)


def sender_settings(cfg: Config) -> tuple[dict[str, float], dict[str, RetryPolicy]]:
    """Each provider's pacing (messages per second; none for console) and retry policy."""
    rates = {name: p.rate for name, p in cfg.providers.items() if p.kind != "console"}
    return rates, {name: p.retry for name, p in cfg.providers.items()}
