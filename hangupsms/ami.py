"""The hardened AMI connection: panoramisk's action correlation, our framing and lifecycle.

This is the only module that imports panoramisk. panoramisk 1.4 (measured) drops the
connection when an event callback raises, fires coroutine callbacks without keeping them,
never notices a dead peer, hangs actions sent while disconnected, reconnects after close(),
hides login failures and decodes each TCP chunk on its own with errors="ignore". Only its
`Action` futures and response correlation are kept; everything else is replaced here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import inspect
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import structlog
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from hangupsms.config import PbxConfig
from hangupsms.frames import (
    BANNER_PREFIX,
    Frame,
    FrameSplitter,
    FrameTooLarge,
    decode_frame,
    decode_headers,
    peek_event_name,
    peek_header,
)
from hangupsms.models import CHANNELS_EVENT, DISCONNECTED_EVENT, AmiEvent

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
EventSink = Callable[[AmiEvent], None]
# (event name, a lookup of its headers by exact name) -> whether anyone needs the event.
EventFilter = Callable[[str, Callable[[str], str | None]], bool]


class AmiError(Exception):
    """Base of the AMI connection errors."""


class AmiNotConnected(AmiError):
    """An action was sent while the connection is not logged in (or closed for good)."""


class AmiActionTimeout(AmiError):
    """The server did not complete an action's response in time."""


class AmiConnectionLost(AmiError):
    """The connection dropped while an action was waiting for its response."""


class AmiNotSent(AmiConnectionLost):
    """The connection had already dropped: the action was never written to it."""


class ConnState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    AUTH_FAILED = "auth_failed"
    CLOSED = "closed"


@dataclass(slots=True)
class AmiStats:
    """Counters of one connection over its whole life (all reconnects included)."""

    events: int = 0  # Event frames handed to the sink
    dropped_frames: int = 0  # frames neither an event nor a response to a pending action
    frames_too_large: int = 0
    sink_errors: int = 0
    reconnects: int = 0  # reconnect attempts scheduled after a lost or failed session
    ping_timeouts: int = 0
    login_failures: int = 0
    malformed_lines: int = 0  # lines without a colon, left out of their frame
    skipped_events: int = 0  # Event frames the connection's filter refused, never decoded


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Delay before reconnect attempt `attempt` (0 = first): doubling from `low`, capped at
    `high`, jittered down to half so that many clients do not reconnect in step."""
    ceiling = min(high, low * 2.0 ** min(attempt + 1, 60))
    return max(low, min(high, rng.uniform(ceiling / 2, ceiling)))


class EventQueue:
    """The bounded hand-off from the AMI readers to the daemon; `put` never blocks.

    When the queue is full the incoming event is dropped, counted and logged (at most once
    per `log_interval`). Blocking would stall the socket reader, which also carries Ping
    responses (the connection would be declared dead), and pausing the socket only moves
    the backlog into Asterisk, which disconnects slow manager sessions anyway. Dropping
    the newest keeps what is queued in order; size the queue for the worst burst.

    A drop is a gap in that PBX's stream, handled like a lost connection: once there is
    room again, an `@Disconnected` event (reason `queue_full`) goes in ahead of the next
    event (or as soon as one is taken, when that PBX has gone quiet), and `on_gap(pbx)` is
    called so that a channel list follows. The calls cut by the gap are then finished, or
    completed, as after a reconnect (with the CDR database where there is one), instead of
    being recorded from a stream with a hole in it.

    A deque and a future per waiting getter rather than asyncio.Queue, whose task
    accounting (`join`) nobody here uses: a put and a get cost a fifth as much.
    """

    def __init__(self, maxsize: int, *, clock: Clock = time.monotonic,
                 log_interval: float = 5.0,
                 on_gap: Callable[[str], None] = lambda pbx: None) -> None:
        if maxsize <= 0:
            raise ValueError("an EventQueue must be bounded (maxsize > 0)")
        self.maxsize = maxsize
        self._items: collections.deque[AmiEvent] = collections.deque()
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._clock = clock
        self._log_interval = log_interval
        self._last_log: float | None = None
        self._unlogged = 0
        self._on_gap = on_gap
        self._gaps: set[str] = set()  # PBXs whose events were dropped, gap not yet marked
        self.dropped = 0

    def put(self, event: AmiEvent) -> None:
        room = self.maxsize - len(self._items)
        if event.pbx in self._gaps:
            if room < 2:
                self._drop(event)
                return
            self._mark_gap(event.pbx, event.received_at)
        elif room < 1:
            self._drop(event)
            return
        self._items.append(event)
        self._wake_one()

    def _mark_gap(self, pbx: str, at: float) -> None:
        self._gaps.discard(pbx)
        self._items.append(AmiEvent(pbx, DISCONNECTED_EVENT, {"Reason": "queue_full"}, at))
        self._wake_one()
        log.warning("ami.queue_gap_marked", pbx=pbx, dropped_total=self.dropped)
        self._on_gap(pbx)

    def _mark_gaps_now(self) -> None:
        """After a take: a PBX whose stream went quiet after a drop gets its mark too."""
        while self._gaps and len(self._items) < self.maxsize:
            self._mark_gap(next(iter(self._gaps)), self._clock())

    def _drop(self, event: AmiEvent) -> None:
        self.dropped += 1
        self._unlogged += 1
        self._gaps.add(event.pbx)
        now = self._clock()
        if self._last_log is None or now - self._last_log >= self._log_interval:
            log.error("ami.queue_full", pbx=event.pbx, event_name=event.name,
                      maxsize=self.maxsize, dropped=self._unlogged, dropped_total=self.dropped)
            self._last_log = now
            self._unlogged = 0

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    async def get(self) -> AmiEvent:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if self._items and getter.done() and not getter.cancelled():
                    self._wake_one()  # it was woken, then cancelled: pass the wake-up on
                raise
        event = self._items.popleft()
        if self._gaps:
            self._mark_gaps_now()
        return event

    def get_nowait(self) -> AmiEvent:
        if not self._items:
            raise asyncio.QueueEmpty
        event = self._items.popleft()
        if self._gaps:
            self._mark_gaps_now()
        return event

    def qsize(self) -> int:
        return len(self._items)


def _to_message(frame: Frame) -> Any:
    """A panoramisk Message (repeated headers as lists, as panoramisk builds them)."""
    # One value per header (the first): panoramisk hashes ActionID and calls .lower() on
    # Message, so a repeated header sent as a list would raise inside data_received.
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in frame.headers:
        if key.lower() not in seen:
            seen.add(key.lower())
            headers[key] = value
    message = Message(headers)
    message.frame = frame  # the response handed back to callers is built from the frame
    return message


def _as_mapping(message: Any) -> Mapping[str, str]:
    """Headers as Asterisk sent them (Message itself adds a `content` key)."""
    frame: Frame = message.frame
    return MappingProxyType(frame.as_dict())


class AmiStreamProtocol(AMIProtocol):  # type: ignore[misc]  # panoramisk has no type hints
    """panoramisk's protocol reading whole frames, handing events to a plain sink.

    Responses still resolve panoramisk `Action` futures. Events never reach panoramisk's
    callback dispatch; an exception in the sink is logged and counted, never fatal.
    """

    def __init__(self, pbx: str, sink: EventSink, stats: AmiStats, *,
                 max_frame_bytes: int, clock: Clock, wanted: EventFilter | None = None) -> None:
        self.pbx = pbx
        self._sink = sink
        self._wanted = wanted
        self._stats = stats
        self._clock = clock
        self._splitter = FrameSplitter(max_frame_bytes)
        self._head = bytearray()
        self.encoding = "utf-8"  # panoramisk's send() encodes actions with this
        self.transport: asyncio.Transport | None = None
        self.responses: dict[str, Any] = {}
        self.closed = False
        loop = asyncio.get_running_loop()
        self.banner: asyncio.Future[str | None] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()  # result: why it ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.encoding = "utf-8"

    def send(self, data: Any, as_list: bool | None = False) -> Any:
        if self.lost.done():
            raise AmiNotSent(self.lost.result())
        return super().send(data, as_list=as_list)

    def forget(self, action: Any) -> None:
        """Stop waiting for `action` (it timed out); a late answer is then dropped."""
        self.responses.pop(action.id, None)

    def abort(self, reason: str) -> None:
        """Drop the connection now, without flushing (the peer may be dead)."""
        self._finish(reason)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish("peer_closed" if exc is None else f"error: {exc!r}")

    def _finish(self, reason: str) -> None:
        if self.lost.done():
            return
        self.closed = True
        self.lost.set_result(reason)
        if not self.banner.done():
            self.banner.set_result(None)
        pending = {id(action): action for action in self.responses.values()}
        self.responses.clear()
        for action in pending.values():
            if not action.future.done():
                action.future.set_exception(AmiConnectionLost(reason))

    def data_received(self, data: bytes) -> None:
        if self.lost.done():
            return
        if not self.banner.done():
            self._check_banner(data)
        # FrameSplitter.feed raises without returning the frames it split before an oversize
        # one; fed at most `max_bytes` at a time, no complete frame can share that call.
        step = self._splitter.max_bytes
        for start in range(0, len(data), step):
            if self.lost.done():
                return
            self._feed(data[start:start + step])

    def _feed(self, data: bytes) -> None:
        try:
            frames = self._splitter.feed(data)
        except FrameTooLarge as exc:
            # Where the next frame starts is unknown: start again on a new connection.
            self._stats.frames_too_large += 1
            log.error("ami.frame_too_large", pbx=self.pbx, error=str(exc),
                      limit=self._splitter.max_bytes)
            self.abort("frame_too_large")
            return
        wanted = self._wanted
        for raw in frames:
            name = peek_event_name(raw)
            if (name is None or name[:1] == "@" or name.lower() == "shutdown"
                    or (self.responses and self._may_answer(raw))):
                # The full path: responses, odd frames, `@` names (dropped loudly), Shutdown,
                # and any frame that may carry the ActionID of an action waiting for its
                # answer (a response, or an event of a list action).
                self._route(decode_frame(raw))
            elif wanted is None or wanted(name, functools.partial(peek_header, raw)):
                self._take_event(name, raw)
            else:
                self._stats.skipped_events += 1
                continue
            if self.lost.done():
                return

    def _check_banner(self, data: bytes) -> None:
        self._head += data[: self._splitter.max_bytes]
        end = self._head.find(b"\n")
        if end < 0 and len(self._head) < self._splitter.max_bytes:
            return
        line = bytes(self._head[: max(end, 0)]).rstrip(b"\r")
        self._head.clear()
        if line.startswith(BANNER_PREFIX):
            self.banner.set_result(line.decode("utf-8", "replace"))
        else:
            log.error("ami.bad_banner", pbx=self.pbx, line=line[:80].decode("utf-8", "replace"))
            self.abort("bad_banner")

    def _route(self, frame: Frame) -> None:
        self._stats.malformed_lines += frame.malformed_lines
        action_id = frame.first("ActionID")
        if action_id is not None and action_id in self.responses:
            try:
                self.handle_message(_to_message(frame))
            except Exception:
                self._stats.dropped_frames += 1
                log.exception("ami.response_unreadable", pbx=self.pbx, action_id=action_id)
                self.abort("bad_response")
            return
        name = frame.first("Event")
        # `@` names belong to the client's own connection events: a peer may not forge them.
        if name is None or name.startswith("@"):
            self._stats.dropped_frames += 1
            log.warning("ami.frame_dropped", pbx=self.pbx, action_id=action_id,
                        response=frame.first("Response"), malformed=frame.malformed_lines)
            return
        self._deliver(AmiEvent(self.pbx, name, MappingProxyType(frame.as_dict()), self._clock()))
        if name.lower() == "shutdown":
            log.warning("ami.peer_shutdown", pbx=self.pbx, shutdown=frame.first("Shutdown"))
            self.abort("peer_shutdown")

    def _may_answer(self, raw: bytes) -> bool:
        """Whether the raw frame holds the ActionID of an action waiting for its answer."""
        return any(action_id.encode() in raw for action_id in self.responses)

    def _take_event(self, name: str, raw: bytes) -> None:
        """An ordinary event while no action waits: what _route would do, in one pass."""
        headers, malformed = decode_headers(raw)
        self._stats.malformed_lines += malformed
        self._deliver(AmiEvent(self.pbx, name, MappingProxyType(headers), self._clock()))

    def _deliver(self, event: AmiEvent) -> None:
        self._stats.events += 1
        try:
            self._sink(event)
        except Exception:
            self._stats.sink_errors += 1
            log.exception("ami.sink_error", pbx=self.pbx, event_name=event.name)


class _Outcome(enum.Enum):
    FAILED = "failed"  # unreachable, bad banner, timeout: back off and retry
    AUTH_FAILED = "auth_failed"  # wrong credentials: the slow lane
    LOST = "lost"  # was READY, then the connection ended: retry soon


class AmiConnection:
    """One AMI login to one PBX, kept alive until close(); events go to `sink`."""

    def __init__(self, pbx: PbxConfig, sink: EventSink, *, clock: Clock = time.monotonic,
                 rng: random.Random | None = None, events: bool = True,
                 wanted: EventFilter | None = None) -> None:
        """`events=False` logs in with events off (the `Events` action turns them on).

        `wanted`: events it refuses are skipped before they are decoded (counted in
        `stats.skipped_events`); None hands over every event. It may be set until run().
        """
        if inspect.iscoroutinefunction(sink):
            raise TypeError("the AMI event sink must be a plain function that only enqueues")
        self.pbx = pbx
        self._sink = sink
        self._clock = clock
        # Jitter for reconnect delays; not security relevant.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
        self.state = ConnState.DISCONNECTED
        self.banner: str | None = None
        self.connects = 0
        self.stats = AmiStats()
        self._protocol: AmiStreamProtocol | None = None
        self._changed = asyncio.Event()
        self._close_requested = asyncio.Event()
        self._session_task: asyncio.Task[_Outcome] | None = None
        self._running = False
        self._events = events
        self.wanted = wanted

    def _set_state(self, state: ConnState) -> None:
        if state is not self.state:
            log.debug("ami.state", pbx=self.pbx.name, state=str(state), previous=str(self.state))
            self.state = state
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_state(self, *states: ConnState) -> ConnState:
        """Wait until the state is one of `states`; returns it."""
        while self.state not in states:
            await self._changed.wait()
        return self.state

    async def wait_ready(self) -> None:
        """Resolve once logged in; AmiNotConnected if the connection is closed first."""
        if await self.wait_state(ConnState.READY, ConnState.CLOSED) is ConnState.CLOSED:
            raise AmiNotConnected(f"AMI connection {self.pbx.name} is closed")

    async def run(self) -> None:
        """Connect, log in, read, and reconnect whenever needed; returns only after close()."""
        if self._running:
            raise RuntimeError("AmiConnection.run() is already running")
        self._running = True
        attempt = 0
        try:
            while not self._close_requested.is_set():
                outcome = await self._one_session()
                if outcome is None:
                    break
                if outcome is _Outcome.LOST:
                    attempt = 0  # it worked until now: the first retry is fast again
                delay = (self.pbx.login_failure_delay if outcome is _Outcome.AUTH_FAILED
                         else backoff_delay(attempt, self.pbx.reconnect_min,
                                            self.pbx.reconnect_max, self._rng))
                attempt += 1
                self.stats.reconnects += 1
                log.info("ami.reconnect_scheduled", pbx=self.pbx.name, delay=round(delay, 3),
                         after=outcome.value)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._close_requested.wait(), delay)
        finally:
            self._running = False
            self._set_state(ConnState.CLOSED)
            log.info("ami.closed", pbx=self.pbx.name)

    async def _one_session(self) -> _Outcome | None:
        """Run one session in its own task so close() can cancel it; None once closed."""
        task = asyncio.create_task(self._session(), name=f"ami-session-{self.pbx.name}")
        self._session_task = task
        try:
            await asyncio.wait({task})
        finally:
            self._session_task = None
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled() or self._close_requested.is_set():
            return None
        try:
            return task.result()
        except Exception:
            log.exception("ami.session_error", pbx=self.pbx.name)
            return _Outcome.FAILED

    async def close(self) -> None:
        """Stop for good: drop the connection, never reconnect, wait until run() returned."""
        self._close_requested.set()
        if self._protocol is not None:
            self._protocol.abort("closed")
        if self._session_task is not None:
            self._session_task.cancel()
        if self._running:
            await self.wait_state(ConnState.CLOSED)
        self._set_state(ConnState.CLOSED)

    # A response deadline per action, not a caller's cancel scope: on expiry the pending
    # action must also be unregistered from the protocol, which an outer timeout cannot do.
    async def send_action(self, action: Mapping[str, str], timeout: float = 5.0  # noqa: ASYNC109
                          ) -> Mapping[str, str]:
        """Send an action and return its response (`Response: Error` is returned, not raised)."""
        return (await self.send_list_action(action, timeout))[0]

    async def send_list_action(self, action: Mapping[str, str],
                               timeout: float = 5.0,  # noqa: ASYNC109  (see send_action)
                               ) -> tuple[Mapping[str, str], ...]:
        """Send an action and return its response followed by its list events, if any."""
        protocol = self._protocol
        if self.state is not ConnState.READY or protocol is None:
            raise AmiNotConnected(f"AMI connection {self.pbx.name} is {self.state}")
        messages = await self._request(protocol, action, timeout)
        return tuple(_as_mapping(message) for message in messages)

    async def _request(self, protocol: AmiStreamProtocol, action: Mapping[str, str],
                       timeout: float) -> list[Any]:  # noqa: ASYNC109  (see send_action)
        request = Action(dict(action))
        future = protocol.send(request, as_list=None)  # None: let panoramisk detect lists
        try:
            async with asyncio.timeout(timeout):
                result = await future
        except TimeoutError:
            protocol.forget(request)
            raise AmiActionTimeout(f"{action.get('Action')} unanswered after {timeout}s") from None
        return list(result) if isinstance(result, list) else [result]

    async def _session(self) -> _Outcome:
        self._set_state(ConnState.CONNECTING)
        protocol = await self._connect()
        if protocol is None:
            self._set_state(ConnState.DISCONNECTED)
            return _Outcome.FAILED
        self._protocol = protocol
        try:
            self._set_state(ConnState.AUTHENTICATING)
            outcome = await self._login(protocol)
            if outcome is not None:
                return outcome
            self.connects += 1
            self._set_state(ConnState.READY)
            log.info("ami.ready", pbx=self.pbx.name, banner=self.banner, connects=self.connects)
            # On every login, not only reconnects: after a restart the journal may hold
            # calls that ended while the daemon was down.
            survey = asyncio.create_task(self.report_live_calls(),
                                         name=f"ami-channels-{self.pbx.name}")
            try:
                reason = await self._serve(protocol)
            finally:
                survey.cancel()
                await asyncio.gather(survey, return_exceptions=True)
            log.warning("ami.connection_lost", pbx=self.pbx.name, reason=reason)
            self._emit(DISCONNECTED_EVENT, {"Reason": reason})
            return _Outcome.LOST
        finally:
            self._protocol = None
            protocol.abort("session_ended")
            if self.state is not ConnState.AUTH_FAILED:
                self._set_state(ConnState.DISCONNECTED)

    async def report_live_calls(self) -> None:
        """After a login (and on request): tell the consumer which calls Asterisk still has.

        The answer follows, in the stream, every event sent before it, so the consumer can
        tell the calls that ended while we were away from those still going. Needs the
        `reporting` (or `system`) write class; without it, those calls end by their TTL.
        """
        try:
            answer = await self.send_list_action({"Action": "CoreShowChannels"}, timeout=10.0)
        except AmiError as exc:
            log.warning("ami.channels_unknown", pbx=self.pbx.name, error=str(exc))
            return
        if str(answer[0].get("Response", "")).lower() != "success":
            log.warning("ami.channels_unknown", pbx=self.pbx.name,
                        error=str(answer[0].get("Message", "")),
                        hint="grant the manager user write=reporting")
            return
        linkedids = sorted({str(item.get("Linkedid", "")) for item in answer[1:]} - {""})
        self._emit(CHANNELS_EVENT, {"Linkedids": " ".join(linkedids)})

    def _emit(self, name: str, headers: Mapping[str, str]) -> None:
        """Put one of the client's own `@` events into the stream; a failing sink is logged."""
        try:
            self._sink(AmiEvent(self.pbx.name, name, headers, self._clock()))
        except Exception:
            self.stats.sink_errors += 1
            log.exception("ami.sink_error", pbx=self.pbx.name, event_name=name)

    async def _connect(self) -> AmiStreamProtocol | None:
        loop = asyncio.get_running_loop()
        pbx = self.pbx

        def factory() -> AmiStreamProtocol:
            return AmiStreamProtocol(pbx.name, self._sink, self.stats,
                                     max_frame_bytes=pbx.max_frame_bytes, clock=self._clock,
                                     wanted=self.wanted)

        try:
            async with asyncio.timeout(pbx.connect_timeout):
                _, protocol = await loop.create_connection(factory, pbx.host, pbx.port)
        except (OSError, TimeoutError) as exc:
            log.warning("ami.connect_failed", pbx=pbx.name, host=pbx.host, port=pbx.port,
                        error=repr(exc))
            return None
        return protocol

    async def _login(self, protocol: AmiStreamProtocol) -> _Outcome | None:
        """None when logged in; otherwise why not (already logged)."""
        pbx = self.pbx
        login = {"Action": "Login", "Username": pbx.username, "Secret": pbx.secret,
                 "Events": "on" if self._events else "off"}
        try:
            async with asyncio.timeout(pbx.connect_timeout):
                self.banner = await protocol.banner
            if self.banner is None:
                log.warning("ami.login_aborted", pbx=pbx.name, reason=protocol.lost.result())
                return _Outcome.FAILED
            response = (await self._request(protocol, login, pbx.connect_timeout))[0]
        except (TimeoutError, AmiActionTimeout):
            log.warning("ami.login_timeout", pbx=pbx.name, timeout=pbx.connect_timeout)
            return _Outcome.FAILED
        except AmiConnectionLost as exc:
            log.warning("ami.login_aborted", pbx=pbx.name, reason=str(exc))
            return _Outcome.FAILED
        if str(response.get("Response", "")).lower() != "success":
            self.stats.login_failures += 1
            log.error("ami.login_failed", pbx=pbx.name, username=pbx.username,
                      message=str(response.get("Message", "")), retry_in=pbx.login_failure_delay)
            self._set_state(ConnState.AUTH_FAILED)
            return _Outcome.AUTH_FAILED
        return None

    async def _serve(self, protocol: AmiStreamProtocol) -> str:
        """Ping until the connection ends; returns why it ended."""
        pinger = asyncio.create_task(self._ping_until_dead(protocol),
                                     name=f"ami-ping-{self.pbx.name}")
        try:
            watched: set[asyncio.Future[Any]] = {pinger, protocol.lost}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger  # re-raises a crash of the pinger: no silent loss of liveness
        return protocol.lost.result()

    async def _ping_until_dead(self, protocol: AmiStreamProtocol) -> None:
        while not protocol.lost.done():
            await asyncio.sleep(self.pbx.ping_interval)
            try:
                await self._request(protocol, {"Action": "Ping"}, self.pbx.ping_timeout)
            except AmiActionTimeout:
                self.stats.ping_timeouts += 1
                log.warning("ami.ping_timeout", pbx=self.pbx.name, timeout=self.pbx.ping_timeout)
                protocol.abort("ping_timeout")
            except AmiConnectionLost:
                return
