"""Wiring: AMI connections -> event queue -> tracker -> planner -> outbox -> sender."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import structlog

from hangupsms import logs
from hangupsms.agi import AgiServer
from hangupsms.ami import AmiConnection, ConnState, EventQueue
from hangupsms.config import Config, ConfigError, load_config
from hangupsms.dispatch import Dispatcher, sender_settings
from hangupsms.models import AmiEvent, CompletedCall
from hangupsms.pipeline import CallPipeline
from hangupsms.policystore import PolicyGate
from hangupsms.providers import SmsProvider, build_provider
from hangupsms.secrecy import secret_values
from hangupsms.store import Store
from hangupsms.systemd import Notifier
from hangupsms.web.app import WebServer
from hangupsms.web.metrics import Metrics
from hangupsms.web.probe import web_context

log = structlog.get_logger(__name__)

CONSUME_BATCH = 1000  # events handled per pass of the consumer before it yields
# The journal is written this long after its oldest unwritten event (or at 500 events), not
# whenever the queue is momentarily empty: a commit (an fsync) per pass held the database
# from the sender. A crash loses at most this much of the live calls' events (the CDR
# fallback, cdrrecovery, finishes such calls). Trimmed at most once per JOURNAL_TRIM_EVERY.
JOURNAL_FLUSH_AFTER = 0.05
JOURNAL_TRIM_EVERY = 1.0

EVENT_QUEUE_SIZE = 100_000


class Daemon:
    """The running service: owns every task, stops in a bounded, orderly way."""

    def __init__(
        self, cfg: Config, *, console: TextIO | None = None,
        providers: Mapping[str, SmsProvider] | None = None,
        clock: Callable[[], float] = time.monotonic, shutdown_timeout: float = 10.0,
        config_path: Path | None = None, notifier: Notifier | None = None,
        queue_size: int = EVENT_QUEUE_SIZE,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        # `clock` paces the calls (grace periods); `wall_clock` dates records and decides
        # when a message is due: the planner, the sender, the web side (tests move it).
        self.wall_clock = wall_clock
        self.notifier = notifier if notifier is not None else Notifier()
        self._config_path = config_path
        self._reload = asyncio.Event()
        self._console = console
        self._given_providers = providers
        self._clock = clock
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.queue = EventQueue(queue_size, on_gap=self._list_channels_after_gap)
        self.connections = [AmiConnection(pbx, self.queue.put) for pbx in cfg.pbx]
        self._side_tasks: set[asyncio.Task[None]] = set()
        # Tags from the dialplan go into the same queue, in order with the AMI events.
        self.agi = None if cfg.agi is None else AgiServer(
            self.queue.put, host=cfg.agi.host, port=cfg.agi.port, pbx=cfg.agi.pbx,
            deadline=cfg.agi.deadline)
        self.pipeline: CallPipeline | None = None
        self.dispatcher: Dispatcher | None = None
        self.store: Store | None = None
        self.web: WebServer | None = None
        self.metrics = Metrics()
        self._progress = asyncio.Event()  # set whenever an event, a call or a message moved
        self.shutdown_timeout = shutdown_timeout

    async def run(self, on_ready: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run until `stop` is set; the outbox and the journal of live calls are kept."""
        store = await Store.open(self.cfg.database)
        providers = dict(self._given_providers or {})
        try:
            recovered = await store.recover_interrupted(self.wall_clock())
            if recovered:
                # Checked with the provider before anything new is sent: never sent twice.
                log.warning("outbox.interrupted_sends_to_check", messages=recovered)
            # A modem provider sends on the same AMI connection the events come in on.
            links = {connection.pbx.name: connection for connection in self.connections}
            for name, pcfg in self.cfg.providers.items():
                providers.setdefault(name, build_provider(pcfg, console=self._console,
                                                          ami=links))
            rates, policies = sender_settings(self.cfg)
            dispatcher = Dispatcher(store, providers, rates, policies=policies,
                                    on_progress=self._progress.set,
                                    gate=PolicyGate(store, self.cfg),
                                    on_latency=self.metrics.observe_latency,
                                    clock=self.wall_clock)
            pipeline = CallPipeline(self.cfg, store, on_recorded=dispatcher.wake,
                                    wall_clock=self.wall_clock)
            self.store, self.dispatcher, self.pipeline = store, dispatcher, pipeline
            await pipeline.restore(self._clock())
            for connection in self.connections:
                # Most of a PBX's events concern no call: skipped unread, not decoded.
                connection.wanted = pipeline.wanted_events(connection.pbx.name)
            if self.agi is not None:
                await self.agi.start()  # an address in use fails the start, loudly
            if self.cfg.web is not None:
                self.web = WebServer(web_context(self, store, pipeline, dispatcher,
                                                 self.metrics))
                await self.web.start()
            async with asyncio.TaskGroup() as group:
                for connection in self.connections:
                    group.create_task(connection.run(), name=f"ami-{connection.pbx.name}")
                consumer = group.create_task(self._consume(pipeline), name="consumer")
                sender_stop = asyncio.Event()
                sender = group.create_task(dispatcher.run(sender_stop), name="sender")
                group.create_task(self._announce_ready(on_ready), name="ready")
                reloader = group.create_task(self._reloader(pipeline), name="reloader")
                watchdog = group.create_task(self._watchdog(consumer, sender, store),
                                             name="watchdog")
                retention = group.create_task(self._retention(store), name="retention")
                cdr_poll = group.create_task(self._cdr_poll(pipeline), name="cdr-poll")
                await self.stop.wait()
                for helper in (reloader, watchdog, retention, cdr_poll):
                    helper.cancel()
                await self._shutdown(pipeline, consumer, sender, sender_stop)
        finally:
            if self.agi is not None:
                await self.agi.close()
            if self.web is not None:
                await self.web.close()
            for provider in providers.values():
                await provider.close()
            await store.close()
        log.info("daemon.stopped", calls=pipeline.calls_recorded, sent=dispatcher.sent)

    def _list_channels_after_gap(self, pbx: str) -> None:
        """Events of `pbx` were dropped (queue full): a channel list closes the gap."""
        for connection in self.connections:
            if connection.pbx.name == pbx and connection.state is ConnState.READY:
                task = asyncio.get_running_loop().create_task(self._report(connection))
                self._side_tasks.add(task)  # kept until done: the loop holds tasks weakly
                task.add_done_callback(self._side_tasks.discard)

    @staticmethod
    async def _report(connection: AmiConnection) -> None:
        try:
            await connection.report_live_calls()
        except Exception:  # a bug here must not go unseen, nor take the daemon down
            log.exception("ami.channels_report_failed", pbx=connection.pbx.name)

    def request_reload(self) -> None:
        """Re-read the configuration file (SIGHUP, `systemctl reload`)."""
        self._reload.set()

    async def _reloader(self, pipeline: CallPipeline) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")
            self.reload(pipeline)
            self.notifier.notify("READY=1")
            self._progress.set()

    async def _watchdog(
        self, consumer: asyncio.Task[None], sender: asyncio.Task[None], store: Store
    ) -> None:
        """Feed systemd's watchdog only while the pipeline is healthy.

        Healthy: the event consumer and the sender still run and the database takes a write.
        A lost AMI link is not unhealthy: a restart would not bring Asterisk back, and
        the client reconnects by itself.
        """
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            problems = [name for name, task in (("consumer", consumer), ("sender", sender))
                        if task.done()]
            if not await store.writable():
                problems.append("database")
            if problems:
                log.error("systemd.watchdog_withheld", problems=problems)
            else:
                self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _cdr_poll(self, pipeline: CallPipeline) -> None:
        """While calls whose start was missed are up, ask for the channel list now and then.

        The list goes through the event queue like any event; when it no longer names such
        a call, the call is rebuilt from its CDR rows (see cdrrecovery).
        """
        intervals = [p.cdr.poll_interval for p in self.cfg.pbx if p.cdr is not None]
        if not intervals:
            return
        while True:
            await asyncio.sleep(min(intervals))
            for connection in self.connections:
                if (pipeline.cdr.waiting(connection.pbx.name)
                        and connection.state is ConnState.READY):
                    await connection.report_live_calls()

    async def _retention(self, store: Store) -> None:
        """Delete records older than `retention.days`, at start and every `every_hours`."""
        while (retention := self.cfg.retention) is not None:
            cutoff = self.wall_clock() - retention.days * 86_400
            calls, messages = await store.purge_before(cutoff)
            if calls:
                log.info("retention.purged", calls=calls, messages=messages,
                         older_than_days=retention.days)
            await asyncio.sleep(retention.every_hours * 3600)

    def reload(self, pipeline: CallPipeline) -> bool:
        """Apply a valid new configuration for the next call; keep the old one otherwise.

        Connections, the database and providers stay as they are (changing them needs a
        restart, which is logged); everything the pipeline decides with takes effect.
        """
        if self._config_path is None:
            log.warning("config.reload_unavailable", reason="no configuration file")
            return False
        try:
            new = load_config(self._config_path)
            logs.redact(secret_values(new))
        except ConfigError as exc:
            log.error("config.reload_refused", error=str(exc))
            return False
        old = self.cfg
        frozen = _restart_only_changes(old, new)
        if frozen:
            log.warning("config.reload_needs_restart", keys=frozen)
        # Each PBX keeps its connection (a new one would drop live calls' events) and takes
        # the new call settings; a PBX added or removed needs a restart.
        connected = {p.name: p for p in old.pbx}
        pbx = tuple(
            dataclasses.replace(p, host=connected[p.name].host, port=connected[p.name].port,
                                username=connected[p.name].username,
                                secret=connected[p.name].secret)
            for p in new.pbx if p.name in connected
        )
        applied = dataclasses.replace(new, database=old.database, providers=old.providers,
                                      pbx=pbx, web=old.web)
        self.cfg = applied
        pipeline.reconfigure(applied)
        if self.dispatcher is not None and self.dispatcher.gate is not None:
            self.dispatcher.gate.cfg = applied
        log.info("config.reloaded", rules=[r.name for r in applied.rules])
        return True

    async def _shutdown(
        self, pipeline: CallPipeline, consumer: asyncio.Task[None], sender: asyncio.Task[None],
        sender_stop: asyncio.Event,
    ) -> None:
        """Stop intake, record calls that already ended, let the send in flight finish."""
        log.info("daemon.stopping")
        self.notifier.notify("STOPPING=1")
        if self.agi is not None:
            await self.agi.close()
        for connection in self.connections:
            await connection.close()
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        await consumer
        # Calls whose end was seen are waiting out their grace for late Cdr events: record
        # them now rather than lose them. Calls still live cannot be finished.
        now = self._clock()
        finished: list[CompletedCall] = []
        while self.queue.qsize():
            finished += pipeline.feed(self.queue.get_nowait(), now)
        finished += pipeline.expire(now + pipeline.longest_grace())
        if finished:
            await pipeline.record(finished)
        await pipeline.sync_journal()
        if pipeline.live_calls():
            # Their events are in the journal: the next start resumes them.
            log.info("daemon.live_calls_kept", calls=pipeline.live_calls())
        sender_stop.set()
        done, _ = await asyncio.wait({sender}, timeout=self.shutdown_timeout)
        if not done:
            # The row stays `sending`; the next start resolves it before sending anything.
            log.warning("daemon.sender_timeout", timeout=self.shutdown_timeout)
            sender.cancel()

    async def _announce_ready(self, on_ready: Callable[[], Awaitable[None]] | None) -> None:
        """Ready once every PBX login succeeded (systemd READY, tests, the demo)."""
        waiters = [c.wait_state(ConnState.READY, ConnState.CLOSED) for c in self.connections]
        await asyncio.gather(*waiters)
        if self.stop.is_set():
            return
        self.ready.set()
        log.info("daemon.ready", pbx=[c.pbx.name for c in self.connections])
        self.notifier.notify("READY=1", "STATUS=logged in to every PBX; database open")
        if on_ready is not None:
            await on_ready()

    async def _consume(self, pipeline: CallPipeline) -> None:
        """The one consumer of the event queue; finalises calls when their grace has passed."""
        schedule = JournalSchedule()
        while not self.stop.is_set():
            deadline = min((d for d in (pipeline.next_deadline(), schedule.flush_at)
                            if d is not None), default=None)
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            event = await self._next_event(timeout)
            now = self._clock()
            # Graces count in stream time (when events were received), so that a backlog
            # cannot end a call before its late Cdr events, still queued, are taken.
            stream = now if event is None else min(event.received_at, now)
            finished = [] if event is None else await _feed(pipeline, event, stream)
            # Take what else is already queued without awaiting per event: the asyncio
            # round trip per event cost more than the work itself (bench/RESULTS.md).
            for _ in range(min(self.queue.qsize(), CONSUME_BATCH)):
                queued = self.queue.get_nowait()
                stream = min(max(stream, queued.received_at), now)
                if pipeline.needs_await(queued):
                    finished += await pipeline.feed_async(queued, stream)
                else:
                    finished += pipeline.feed(queued, stream)
            # Nothing left queued: everything received by now has been seen.
            finished += pipeline.expire(stream if self.queue.qsize() else now)
            if finished:
                await pipeline.record(finished)
            await schedule.sync_when_due(pipeline, now)
            self._progress.set()

    async def _next_event(self, wait: float | None) -> AmiEvent | None:
        getter = asyncio.ensure_future(self.queue.get())
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait(
                {getter, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
            # gather, not suppress(CancelledError): a cancel of this task must propagate.
            await asyncio.gather(stopper, getter, return_exceptions=True)
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def wait_drained(self) -> None:
        """Return once `drained()` holds (the demo and tests use it after a replay)."""
        await self.wait_until(self.drained)

    async def wait_until(self, condition: Callable[[], Awaitable[bool]]) -> None:
        """Return once `condition()` holds; it is checked after every step of the pipeline."""
        while True:
            self._progress.clear()
            if await condition():
                return
            await self._progress.wait()

    async def drained(self) -> bool:
        """True when no event is queued, no call is live and nothing is waiting to be sent."""
        pipeline, store = self.pipeline, self.store
        if pipeline is None or store is None or self.queue.qsize() or pipeline.live_calls():
            return False
        counts = await store.counts_by_state()
        if any(counts.get(state) for state in ("pending", "sending", "checking")):
            return False
        return not await store.lookups_scheduled()


@dataclass(slots=True)
class JournalSchedule:
    """When the consumer writes the journal (see JOURNAL_FLUSH_AFTER) and trims it."""

    flush_at: float | None = None  # None: nothing waits to be written
    trim_at: float = 0.0

    async def sync_when_due(self, pipeline: CallPipeline, now: float) -> None:
        journal = pipeline.journal
        if journal is None or not journal.pending:
            return
        if self.flush_at is None:
            self.flush_at = now + JOURNAL_FLUSH_AFTER
        if journal.full or now >= self.flush_at:
            trim = now >= self.trim_at
            await pipeline.sync_journal(trim=trim)
            self.flush_at = None
            if trim:
                self.trim_at = now + JOURNAL_TRIM_EVERY


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    """The keys whose change a reload cannot apply (AMI connections, database, providers)."""
    changed: list[str] = []
    if new.database != old.database:
        changed.append("database")
    if new.providers != old.providers:
        changed.append("providers")
    if new.web != old.web:
        changed.append("web")
    # A PBX added, removed, moved, with a new login or another CDR database.
    before = {p.name: (p.host, p.port, p.username, p.secret, p.cdr) for p in old.pbx}
    after = {p.name: (p.host, p.port, p.username, p.secret, p.cdr) for p in new.pbx}
    if before != after:
        changed.append("pbx (connections)")
    return changed


async def _feed(pipeline: CallPipeline, event: AmiEvent, now: float) -> list[CompletedCall]:
    if pipeline.needs_await(event):
        return await pipeline.feed_async(event, now)
    return pipeline.feed(event, now)
