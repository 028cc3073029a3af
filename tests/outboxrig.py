"""A real outbox (SQLite file), the real TwilioProvider and FakeTwilio on one fake clock."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hangupsms.config import ProviderConfig
from hangupsms.dispatch import Dispatcher, RetryPolicy
from hangupsms.models import (
    EMPTY,
    CompletedCall,
    Direction,
    Disposition,
    Encoding,
    EndReason,
    PlannedMessage,
    RenderedText,
)
from hangupsms.providers.twilio import TwilioProvider
from hangupsms.store import Store
from tests.faketwilio import FakeClock, FakeTwilio

SID = "AC" + "1" * 32
TOKEN = "secret-token"
FROM = "+447700900000"
TO = "+447700900123"
BODY = "Thanks for calling Acme, Zoë."


@dataclass
class Rig:
    """Everything one dispatch test needs; `crash()` drops the process state, keeps the file."""

    path: Path
    clock: FakeClock
    fake: FakeTwilio
    store: Store
    provider: TwilioProvider
    timeout: float
    calls: int = 0

    def dispatcher(
        self, *, on_progress: Callable[[], None] = lambda: None, **policy: Any
    ) -> Dispatcher:
        """A Dispatcher over this rig's store and provider, unpaced, with a fixed jitter seed."""
        return Dispatcher(
            self.store, {"twilio": self.provider}, {}, policy=RetryPolicy(**policy),
            clock=self.clock, rng=random.Random(7), on_progress=on_progress,
        )

    async def add_message(
        self, *, to: str = TO, body: str = BODY, fallbacks: tuple[str, ...] = ()
    ) -> int:
        """Record a call with one pending message (created now) via twilio, then `fallbacks`;
        its message id."""
        self.calls += 1
        linkedid = f"1796400000.{self.calls}"
        text = RenderedText(body, Encoding.UCS2, 1)
        planned = [PlannedMessage("thanks", "customer", to, "twilio", "thanks", text,
                                  fallbacks=fallbacks)]
        assert await self.store.record_call(_call(linkedid, to), to, planned, self.clock())
        rows = await self.store.history(linkedid=linkedid)
        return rows[0].id

    def row(self, message_id: int) -> dict[str, Any]:
        """The message's stored columns, read through a connection of its own."""
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            found = db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        assert found is not None
        return dict(found)

    async def outcomes(self, message_id: int) -> list[str]:
        return [attempt.outcome for attempt in await self.store.attempts(message_id)]

    async def crash(self) -> None:
        """Lose the sender and its connections as a killed process would; reopen the file."""
        await self.provider.close()
        await self.store.close()
        self.store = await Store.open(self.path)
        self.provider = _provider(self.fake, self.timeout)


def _provider(fake: FakeTwilio, timeout: float) -> TwilioProvider:
    cfg = ProviderConfig(
        name="twilio", kind="twilio", account_sid=SID, auth_token=TOKEN, from_=FROM,
        api_url=fake.url, timeout=timeout,
    )
    return TwilioProvider(cfg)


@asynccontextmanager
async def open_rig(
    tmp_path: Path, *, provider_timeout: float = 5.0, list_lag: float = 0.0
) -> AsyncIterator[Rig]:
    clock = FakeClock()
    fake = await FakeTwilio(SID, TOKEN, clock=clock, list_lag=list_lag).start()
    path = tmp_path / "outbox.db"
    store = await Store.open(path)
    rig = Rig(path, clock, fake, store, _provider(fake, provider_timeout), provider_timeout)
    try:
        yield rig
    finally:
        await rig.provider.close()
        await rig.store.close()
        await fake.stop()


def _call(linkedid: str, customer: str) -> CompletedCall:
    return CompletedCall(
        pbx="lab", linkedid=linkedid, direction=Direction.INBOUND, customer_number=customer,
        customer_name="Zoë", presentation_restricted=False, did="4000", queue="support",
        answered=True, disposition=Disposition.ANSWERED, queue_abandoned=False,
        agent_id="agent1", agent_name="Agent One", agents_involved=("agent1",),
        talk_seconds=20, wait_seconds=3, variables=EMPTY, transferred=False,
        started_at=1_796_399_900.0, ended_at=1_796_399_990.0,
        end_reason=EndReason.LINKEDID_END, linkedid_end_seen=True,
    )
