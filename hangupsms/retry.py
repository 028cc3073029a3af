"""How one provider's messages are retried, checked after an ambiguous send, and given up."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hangupsms.models import OutboundMessage


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry budget, maximum age, backoff and provider-lookup settings (seconds throughout).

    One per provider (config keys of the same names under `providers.<name>`); `batch` and
    `idle_poll` are read from the dispatcher's default policy only.
    """

    max_attempts: int = 8  # sends per message, ambiguous ones included
    max_age: float = 86_400.0  # since the message was stored; older ones are never sent
    base_delay: float = 2.0  # first wait before a retry; doubles, jittered, up to max_delay
    max_delay: float = 300.0  # cap of the retry and lookup waits
    throttle_delay: float = 30.0  # when a 429 carries no Retry-After
    # Twilio's message list can lag a create by a few seconds, and a request that timed out
    # may still be in flight: "not found" proves nothing until this long after the attempt.
    lookup_settle: float = 10.0  # after an ambiguous send, before "not found" counts as proof
    lookup_delay: float = 30.0  # first wait after an inconclusive lookup; doubles to max_delay
    max_lookups: int = 10  # inconclusive lookups before the message is left for a human
    clock_skew: float = 60.0  # our clock against the provider's, widening the lookup window
    batch: int = 20
    idle_poll: float = 5.0  # re-check the outbox at least this often (another writer, clock)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_lookups < 1 or self.batch < 1:
            raise ValueError("max_attempts, max_lookups and batch must be at least 1")
        durations = (self.max_age, self.base_delay, self.max_delay, self.throttle_delay,
                     self.lookup_settle, self.lookup_delay, self.clock_skew, self.idle_poll)
        if min(durations) < 0:
            raise ValueError("RetryPolicy durations cannot be negative")

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Capped, jittered exponential delay before send attempt `attempts + 1`."""
        return _jittered(min(self.max_delay, self.base_delay * 2.0 ** max(0, attempts - 1)), rng)

    def lookup_backoff(self, lookups: int, rng: random.Random) -> float:
        """Capped, jittered delay before lookup `lookups + 1` after inconclusive ones."""
        return _jittered(min(self.max_delay, self.lookup_delay * 2.0 ** max(0, lookups - 1)), rng)

    def deadline(self, message: OutboundMessage) -> float | None:
        """The time after which `message` is too old to send (None: its age is unknown)."""
        return None if message.created_at is None else message.created_at + self.max_age


def _jittered(delay: float, rng: random.Random) -> float:
    return delay * (0.5 + rng.random() / 2)
