"""A fake Asterisk Manager Interface on loopback that replays recorded `.ami` transcripts.

It answers its client's actions itself (Login, Ping, Events, CoreShowChannels, Logoff) and
sends the recorded `Event:` frames byte for byte after a successful login. One replay
cursor is shared by all connections, so a client that reconnects resumes where the last
connection stopped; it serves one client at a time.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from hangupsms.cdrlab import CdrWriter
from hangupsms.frames import Frame, FrameSplitter, FrameTooLarge, decode_frame, read_transcript

log = structlog.get_logger(__name__)

BANNER = b"Asterisk Call Manager/11.0.0"
EOL = b"\r\n"
# Some actions of Asterisk 22 and the write classes that allow each (any one of them; none:
# every user may). ListCommands lists an action as `Name: synopsis (Priv: classes,all)`,
# `(Priv: <none>)` for those every user may run.
ACTION_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Login": ("Login Manager.", ()),
    "Logoff": ("Logoff Manager.", ()),
    "Ping": ("Keepalive command.", ()),
    "Events": ("Control Event Flow.", ()),
    "ListCommands": ("List available manager commands.", ()),
    "CoreSettings": ("Show PBX core settings (version etc).", ("system", "reporting")),
    "CoreShowChannels": ("List currently active channels.", ("system", "reporting")),
    "Status": ("List channel status.", ("system", "call", "reporting")),
    "Getvar": ("Gets a channel variable or function value.", ("call", "reporting")),
    "Setvar": ("Sets a channel variable or function value.", ("call",)),
    "Hangup": ("Hangup channel.", ("system", "call")),
    "Redirect": ("Redirect (transfer) a call.", ("call",)),
    "Originate": ("Originate a call.", ("originate",)),
    "Command": ("Execute Asterisk CLI Command.", ("command",)),
    "GetConfig": ("Retrieve configuration.", ("system", "config")),
    "UpdateConfig": ("Update basic configuration.", ("config",)),
    "UserEvent": ("Send an arbitrary event.", ("user",)),
    "AGI": ("Add an AGI command to execute by Async AGI.", ("agi",)),
}
_ACTION_NAMES = {name.lower(): name for name in ACTION_CLASSES}


@dataclass(frozen=True, slots=True)
class ReplayFrame:
    """One recorded event frame (without its blank-line terminator) and when it came."""

    raw: bytes
    delay: float  # seconds after the previous event frame of the same recording


@dataclass(frozen=True, slots=True)
class ModemAnswer:
    """How the fake GSM modem answers one DongleSendSMS / QuectelSendSMS, as chan_dongle does.

    `response` None never answers (the client's action times out); `drop` closes the
    connection instead of answering, after the action was read.
    """

    response: str | None = "Success"
    message: str = "SMS queued for send"
    drop: bool = False


SMS_ACTIONS = ("donglesendsms", "quectelsendsms")


def load_transcript(path: Path) -> list[ReplayFrame]:
    """The `Event:` frames of a transcript, spaced as its `.timing` file says (0 without one)."""
    data = path.read_bytes()
    frames = read_transcript(path)[1]
    timing = path.with_name(path.name + ".timing")
    read_ends: list[int] = []
    read_times: list[float] = []
    if timing.exists():
        for line in timing.read_text(encoding="utf-8").splitlines():
            if line.strip():
                read = json.loads(line)
                read_ends.append(int(read["off"]) + int(read["len"]))
                read_times.append(float(read["t"]))
    out: list[ReplayFrame] = []
    position = 0
    previous: float | None = None
    for raw in frames:
        start = data.find(raw, position)
        position = start + len(raw)
        if decode_frame(raw).first("Event") is None:
            continue  # a response to the recording client's own action
        # A frame is available once the read holding its last byte has arrived.
        index = bisect.bisect_left(read_ends, position)
        at = read_times[index] if index < len(read_times) else previous or 0.0
        out.append(ReplayFrame(raw, 0.0 if previous is None else max(0.0, at - previous)))
        previous = at
    return out


_CDR_WRITER_EVENTS = (b"Event: Newchannel\r", b"Event: VarSet\r", b"Event: Cdr\r")


class AmiReplayServer:
    """An AMI server on 127.0.0.1 (port 0) replaying transcripts, concatenated in order.

    `chunk_size` cuts every write into pieces of that many bytes (yielding to the loop
    between them, so the client reads them separately); `drop_after_frames` closes each
    connection after that many event frames; `pace` scales the recorded spacing (None: as
    fast as possible); `answer_pings=False` plays a dead peer that keeps the socket open;
    `lose_after_drop` frames after each drop happen while nobody listens, and are lost;
    `hold_at` pauses the replay before that frame index until `released` is set;
    `cdr` writes the CDR rows of every event that happens (see cdrlab).
    CoreShowChannels lists the channels the frames so far have created and not hung up.
    `write_classes` plays a manager user's `write =`: actions of ACTION_CLASSES it does not
    allow get `Permission denied`, and ListCommands lists only the others (None: all).

    `modem` plays a GSM modem behind chan_dongle / chan_quectel: its answers are used in
    order, then every send succeeds; each send action is kept in `sms`. Without it (None)
    the PBX has no such module and those actions are unknown commands.
    """

    def __init__(self, transcripts: Iterable[Path] = (), *, username: str, secret: str,
                 chunk_size: int | None = None, drop_after_frames: int | None = None,
                 pace: float | None = None, answer_pings: bool = True,
                 banner: bytes = BANNER, lose_after_drop: int = 0,
                 hold_at: int | None = None, cdr: CdrWriter | None = None,
                 list_before_drop: bool = False,
                 write_classes: frozenset[str] | None = None,
                 modem: Sequence[ModemAnswer] | None = None) -> None:
        self.frames: list[ReplayFrame] = [f for p in transcripts for f in load_transcript(p)]
        self.username = username
        self.secret = secret
        self.chunk_size = chunk_size
        self.drop_after_frames = drop_after_frames
        self.pace = pace
        self.answer_pings = answer_pings
        self.banner = banner
        self.port = 0
        self.cursor = 0  # index of the next event frame to send
        self.connections = 0
        self.lose_after_drop = lose_after_drop
        self.hold_at = hold_at  # pause before sending the frame at this index until release()
        self.cdr = cdr  # Asterisk's CDR backend: writes rows whether anyone listens or not
        # A drop waits until the session answered a CoreShowChannels: each session then
        # learns which calls are live, as a client does whose link stays up for a moment.
        self.list_before_drop = list_before_drop
        self.write_classes = write_classes
        self.released = asyncio.Event()
        self.lost_frames = 0
        self.live: dict[str, str] = {}  # Uniqueid -> Linkedid of channels not yet hung up
        self.connected_at: list[float] = []  # loop time of each accepted connection
        self.logins = 0
        self.login_failures = 0
        self.actions: collections.Counter[str] = collections.Counter()
        self.events_done = asyncio.Event()
        self.modem = None if modem is None else collections.deque(modem)
        self.sms: list[dict[str, str]] = []  # every send action's headers but ActionID
        self._server: asyncio.Server | None = None
        self._sessions: set[_ReplaySession] = set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("replay.listening", port=self.port, frames=len(self.frames))

    async def close(self) -> None:
        """Stop listening and end every connection."""
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()

    async def drop_connections(self) -> None:
        """Close every client connection now and wait until their sessions ended."""
        # Abort rather than cancel the session tasks: Python 3.11's start_server callback
        # calls task.exception() on them, which raises for a cancelled task.
        for session in self._sessions:
            session.writer.transport.abort()
        await self.wait_until(lambda: not self._sessions)

    async def __aenter__(self) -> AmiReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def clients(self) -> int:
        """Connections open now."""
        return len(self._sessions)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; it is checked after every change of the counters."""
        while not predicate():
            await self._changed.wait()

    def allows(self, action: str) -> bool:
        """Whether the manager user may run `action` (unknown actions: yes, as before)."""
        name = _ACTION_NAMES.get(action.lower())
        if self.write_classes is None or name is None or "all" in self.write_classes:
            return True
        needed = ACTION_CLASSES[name][1]
        return not needed or bool(self.write_classes.intersection(needed))

    def advance(self) -> None:
        """The frame at the cursor has happened (sent, or lost while nobody listened)."""
        raw = self.frames[self.cursor].raw
        if self.cdr is not None and raw.startswith(_CDR_WRITER_EVENTS):
            self.cdr.happened(decode_frame(raw))
        if raw.startswith((b"Event: Newchannel\r", b"Event: Hangup\r")):
            frame = decode_frame(raw)
            uniqueid = frame.first("Uniqueid") or ""
            if frame.first("Event") == "Newchannel":
                self.live[uniqueid] = frame.first("Linkedid") or uniqueid
            else:
                self.live.pop(uniqueid, None)
        self.cursor += 1
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _ReplaySession(self, reader, writer)
        self.connections += 1
        self.connected_at.append(asyncio.get_running_loop().time())
        self._sessions.add(session)
        self._notify()
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            self._notify()


class _ReplaySession:
    """One client connection: answers actions, replays events after login."""

    def __init__(self, server: AmiReplayServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self._lock = asyncio.Lock()  # one frame at a time: chunked writes must not interleave
        self._replay: asyncio.Task[None] | None = None
        self._eof_sent = False  # half-closed by a drop: nothing more may be written
        self._listed = asyncio.Event()  # a CoreShowChannels was answered on this session

    async def run(self) -> None:
        try:
            await self._write(self.server.banner + EOL)
            splitter = FrameSplitter(65536)
            while data := await self.reader.read(65536):
                for raw in splitter.feed(data):
                    if not await self._handle(decode_frame(raw)):
                        return
        except (OSError, FrameTooLarge) as exc:
            # The client went away mid-write, or sent garbage: end this connection only.
            log.info("replay.client_gone", error=repr(exc))
        finally:
            await self._stop_replay()
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    async def _stop_replay(self) -> None:
        if self._replay is not None:
            self._replay.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._replay

    async def _handle(self, frame: Frame) -> bool:
        """Answer one action; False ends the connection."""
        action = (frame.first("Action") or "").lower()
        action_id = frame.first("ActionID")
        self.server.actions[action] += 1
        self.server._notify()
        if action == "login":
            return await self._login(frame, action_id)
        if not self.authenticated:
            await self._reply(action_id, ("Error", "Authentication Required"))
        elif not self.server.allows(action):
            await self._reply(action_id, ("Error", "Permission denied"))
        elif action == "listcommands":
            await self._list_commands(action_id)
        elif action == "coresettings":
            await self._reply(action_id, ("Success", None), ("AMIversion", "11.0.0"),
                              ("AsteriskVersion", "22.10.1"), ("SystemName", ""),
                              ("CoreCDRenabled", "Yes"), ("CoreHTTPenabled", "No"))
        elif action == "ping":
            if self.server.answer_pings:
                stamp = f"{time.time():.6f}"
                await self._reply(action_id, ("Success", None), ("Ping", "Pong"),
                                  ("Timestamp", stamp))
        elif action == "events":
            await self._events(frame, action_id)
        elif action == "coreshowchannels":
            await self._list_channels(action_id)
        elif action in SMS_ACTIONS and self.server.modem is not None:
            return await self._send_sms(frame, action_id, self.server.modem)
        elif action == "logoff":
            await self._reply(action_id, ("Goodbye", "Thanks for all the fish."))
            return False
        else:
            await self._reply(action_id, ("Error", "Invalid/unknown command"))
        return True

    async def _list_channels(self, action_id: str | None) -> None:
        """The channels the replay has created and not yet hung up, as Asterisk lists them."""
        live = sorted(self.server.live.items())
        await self._reply(action_id, ("Success", "Channels will follow"), ("EventList", "start"))
        for uniqueid, linkedid in live:
            await self._send([("Event", "CoreShowChannel"), ("ActionID", action_id),
                              ("Uniqueid", uniqueid), ("Linkedid", linkedid)])
        await self._send([("Event", "CoreShowChannelsComplete"), ("ActionID", action_id),
                          ("EventList", "Complete"), ("ListItems", str(len(live)))])
        self._listed.set()

    async def _list_commands(self, action_id: str | None) -> None:
        listed = [
            (name, f"{synopsis} (Priv: {','.join((*classes, 'all')) if classes else '<none>'})")
            for name, (synopsis, classes) in ACTION_CLASSES.items() if self.server.allows(name)
        ]
        await self._reply(action_id, ("Success", None), *listed)

    async def _send_sms(self, frame: Frame, action_id: str | None,
                        answers: collections.deque[ModemAnswer]) -> bool:
        """Answer a send as chan_dongle's manager.c does; False when the answer is a hang-up."""
        server = self.server
        server.sms.append({k: v for k, v in frame.headers if k.lower() != "actionid"})
        server._notify()
        answer = answers.popleft() if answers else ModemAnswer()
        if answer.drop:
            return False
        if answer.response is not None:
            device = frame.first("Device") or ""
            ident = f"0x{0x55D0C5A3E000 + 64 * len(server.sms):x}"
            await self._reply(action_id, (answer.response, f"[{device}] {answer.message}"),
                              ("ID", ident if answer.response == "Success" else "(nil)"))
        return True

    async def _login(self, frame: Frame, action_id: str | None) -> bool:
        if (frame.first("Username"), frame.first("Secret")) != (self.server.username,
                                                                self.server.secret):
            self.server.login_failures += 1
            await self._reply(action_id, ("Error", "Authentication failed"))
            return False  # Asterisk, too, ends the session after a failed login
        self.authenticated = True
        self.server.logins += 1
        await self._reply(action_id, ("Success", "Authentication accepted"))
        if (frame.first("Events") or "on").lower() != "off":
            self._start_replay()
        return True

    async def _events(self, frame: Frame, action_id: str | None) -> None:
        enabled = (frame.first("EventMask") or "on").lower() != "off"
        await self._reply(action_id, ("Success", None), ("Events", "On" if enabled else "Off"))
        if enabled:
            self._start_replay()

    def _start_replay(self) -> None:
        if self._replay is None:
            self._replay = asyncio.create_task(self._replay_events())

    async def _replay_events(self) -> None:
        server = self.server
        sent = 0
        while server.cursor < len(server.frames):
            if server.hold_at == server.cursor:
                await server.released.wait()  # the test does something mid-call, then goes on
            frame = server.frames[server.cursor]
            if server.pace is not None and frame.delay:
                await asyncio.sleep(frame.delay * server.pace)
            await self._write(frame.raw + EOL + EOL)
            server.advance()
            sent += 1
            if server.drop_after_frames is not None and sent >= server.drop_after_frames:
                if server.list_before_drop:
                    await self._listed.wait()
                log.info("replay.dropping_connection", sent=sent, cursor=server.cursor)
                # Like Asterisk, the calls go on while nobody listens: these are lost.
                for _ in range(min(server.lose_after_drop, len(server.frames) - server.cursor)):
                    server.advance()
                    server.lost_frames += 1
                # Half-close: the client reads everything, then sees EOF and hangs up,
                # which ends this session. A full close here could turn into a reset
                # (our side may hold unread bytes), and a reset loses data in flight.
                self._eof_sent = True
                self.writer.write_eof()
                return
        server.events_done.set()
        server._notify()

    async def _reply(self, action_id: str | None, status: tuple[str, str | None],
                     *headers: tuple[str, str]) -> None:
        response, message = status
        lines: list[tuple[str, str | None]] = [("Response", response), ("ActionID", action_id)]
        if message is not None:
            lines.append(("Message", message))
        await self._send([*lines, *headers])

    async def _send(self, headers: Sequence[tuple[str, str | None]]) -> None:
        text = "".join(f"{k}: {v}\r\n" for k, v in headers if v is not None)
        await self._write(text.encode("utf-8") + EOL)

    async def _write(self, payload: bytes) -> None:
        step = self.server.chunk_size or len(payload)
        async with self._lock:
            for start in range(0, len(payload), step):
                if self.writer.is_closing() or self._eof_sent:
                    raise ConnectionResetError("client connection closed")
                self.writer.write(payload[start:start + step])
                await self.writer.drain()
                if self.server.chunk_size:
                    await asyncio.sleep(0)  # let the client read this chunk on its own


async def serve_transcripts(paths: Iterable[Path], *, username: str, secret: str,
                            chunk_size: int | None = None, drop_after_frames: int | None = None,
                            pace: float | None = None, answer_pings: bool = True
                            ) -> AmiReplayServer:
    """Start an AmiReplayServer for `paths` (in order) and return it; `close()` it when done."""
    server = AmiReplayServer(paths, username=username, secret=secret, chunk_size=chunk_size,
                             drop_after_frames=drop_after_frames, pace=pace,
                             answer_pings=answer_pings)
    await server.start()
    return server
