"""The one sender task: claims due messages from the outbox, sends, records each outcome."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from hangupsms.logs import mask_number
from hangupsms.models import MessageState, OutboundMessage, SendResult, SendStatus
from hangupsms.providers import SmsProvider
from hangupsms.store import Store

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried: capped, jittered exponential backoff and a budget."""

    max_attempts: int = 8
    base_delay: float = 2.0
    max_delay: float = 300.0
    throttle_delay: float = 30.0  # when a 429 carries no Retry-After
    batch: int = 20
    idle_poll: float = 5.0  # re-check the outbox at least this often (another writer, clock)

    def backoff(self, attempts: int, rng: random.Random) -> float:
        delay: float = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempts - 1))
        return delay * (0.5 + rng.random() / 2)


class Dispatcher:
    """Owns sending. `wake()` after new rows are committed; `run()` until `stop` is set."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, SmsProvider],
        rates: Mapping[str, float],
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._intervals = {name: 1.0 / rate for name, rate in rates.items() if rate > 0}
        self._next_slot: dict[str, float] = {}
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._wakeup = asyncio.Event()
        self._on_progress = on_progress
        self.sent = 0
        self.alive = False

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; the message in flight then finishes, the rest stay queued."""
        self.alive = True
        try:
            while not stop.is_set():
                self._wakeup.clear()
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
        """Send everything due now, then return (`replay`); retries due later stay queued."""
        while batch := await self._store.claim_due(self._clock(), self._policy.batch):
            for message in batch:
                await self._pace(message.provider, asyncio.Event())
                await self._send_one(message)

    async def _idle(self, stop: asyncio.Event) -> None:
        due = await self._store.next_due()
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
        bound = log.bind(
            message_id=message.id, rule=message.rule, to=mask_number(message.to),
            provider=message.provider, linkedid=message.call_linkedid, attempt=message.attempts,
        )
        if provider is None:
            await self._store.finish(
                message.id, MessageState.FAILED, self._clock(), outcome="no_provider",
                reason=f"provider {message.provider!r} is not configured",
            )
            bound.error("sms.failed", reason="provider not configured")
            return
        started = time.monotonic()
        try:
            result = await provider.send(message)
        except Exception as exc:  # a provider bug must not kill the sender
            bound.exception("sms.provider_error")
            result = SendResult(SendStatus.AMBIGUOUS, detail=f"{type(exc).__name__}: {exc}")
        latency = round(time.monotonic() - started, 3)
        await self._record(message, result, bound.bind(latency=latency))
        self._on_progress()

    async def _record(
        self, message: OutboundMessage, result: SendResult, bound: structlog.BoundLogger
    ) -> None:
        now = self._clock()
        store, policy = self._store, self._policy
        status = result.status
        if status is SendStatus.ACCEPTED:
            self.sent += 1
            await store.finish(message.id, MessageState.SENT, now, outcome=status.value,
                               provider_id=result.provider_id)
            bound.info("sms.sent", provider_id=result.provider_id)
        elif status is SendStatus.REJECTED:
            await store.finish(message.id, MessageState.FAILED, now, outcome=status.value,
                               reason=result.detail, error_code=result.error_code)
            bound.warning("sms.failed", error_code=result.error_code, reason=result.detail)
        elif status is SendStatus.AMBIGUOUS:
            # The provider may have accepted it; resending could text the customer twice.
            await store.finish(message.id, MessageState.UNKNOWN, now, outcome=status.value,
                               reason=result.detail, error_code=result.error_code)
            bound.warning("sms.unknown", error_code=result.error_code, reason=result.detail)
        elif message.attempts >= policy.max_attempts:
            reason = f"retry budget of {policy.max_attempts} attempts spent: {result.detail}"
            await store.finish(message.id, MessageState.DEAD, now, outcome=status.value,
                               reason=reason, error_code=result.error_code)
            bound.error("sms.dead", reason=reason)
        else:
            if status is SendStatus.THROTTLED:
                delay = result.retry_after if result.retry_after is not None else (
                    policy.throttle_delay)
            else:
                delay = policy.backoff(message.attempts, self._rng)
            await store.finish(message.id, MessageState.PENDING, now, outcome=status.value,
                               reason=result.detail, error_code=result.error_code,
                               send_at=now + delay)
            bound.info("sms.retry_scheduled", status=status.value, delay=round(delay, 2))
