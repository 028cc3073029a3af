"""A fake Asterisk for the benchmarks, run as its own process so it never competes with the
client for the client's event loop: `python -m bench.amiserver --calls N --concurrency K`.

It generates the stream before listening (so generating costs the measurement nothing),
prints one JSON line (`port`, `frames`, `bytes`, `calls`, `span`), then serves every
connection on 127.0.0.1 the same stream from its start: the banner, a Login answer, then the
events as fast as the socket takes them, or paced at `--rate` calls per second (the recorded
spacing, compressed or stretched), then a sentinel Cdr (`UniqueID: bench-end`). Pings are
answered between frames. It stops on SIGTERM or when its stdin closes (the parent is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.traffic import FILTERS, traffic
from hangupsms.frames import Frame, FrameSplitter, FrameTooLarge, decode_frame

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
CHUNK = 64 * 1024  # bytes per write when blasting; always whole frames
# Sent after the stream: a client that skips events it does not need still delivers a Cdr
# (every call's talk time is in one), so "the sentinel arrived" means "everything was read".
SENTINEL_ID = "bench-end"
SENTINEL = (f"Event: Cdr\r\nPrivilege: cdr,all\r\nChannel: Local/bench@sentinel\r\n"
            f"Disposition: NO ANSWER\r\nUniqueID: {SENTINEL_ID}\r\n\r\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class Stream:
    frames: list[bytes]
    due: list[float]  # seconds after the first frame at which each frame is sent
    chunks: list[bytes]  # the same frames, joined into ~CHUNK-byte writes


def build(calls: int, concurrency: int, event_filter: str, rate: float) -> Stream:
    frames: list[bytes] = []
    times: list[float] = []
    for at, frame in traffic(calls, concurrency, event_filter=event_filter).timed_frames():
        frames.append(frame)
        times.append(at)
    frames.append(SENTINEL)
    times.append(times[-1] if times else 0.0)
    span = times[-1] - times[0]
    # `rate` calls per second: the recorded call rate (calls / span) scaled to it.
    speed = rate * span / calls if rate > 0 and calls and span > 0 else 0.0
    due = [(at - times[0]) / speed for at in times] if speed else [0.0] * len(times)
    chunks: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for frame in frames:
        pending.append(frame)
        size += len(frame)
        if size >= CHUNK:
            chunks.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        chunks.append(b"".join(pending))
    return Stream(frames, due, chunks)


class Session:
    """One client: answers Login, Ping and Logoff; sends the stream after login."""

    def __init__(self, stream: Stream, paced: bool, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.stream = stream
        self.paced = paced
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()  # responses go between whole frames
        self.sender: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            await self.write(BANNER)
            splitter = FrameSplitter(65536)
            while data := await self.reader.read(65536):
                for raw in splitter.feed(data):
                    if not await self.answer(decode_frame(raw)):
                        return
        except (OSError, FrameTooLarge):
            return  # the client went away: end this session only
        finally:
            if self.sender is not None:
                self.sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await self.sender
            self.writer.close()

    async def answer(self, frame: Frame) -> bool:
        name = (frame.first("Action") or "").lower()
        action_id = frame.first("ActionID") or ""
        if name == "login":
            await self.reply(action_id, "Success", "Message: Authentication accepted")
            if self.sender is None:
                self.sender = asyncio.create_task(self.send_stream())
        elif name == "ping":
            await self.reply(action_id, "Success", f"Ping: Pong\r\nTimestamp: {time.time():.6f}")
        elif name == "coreshowchannels":
            # The daemon asks after each login; it only acts on the answer after a lost
            # connection, which never happens here. Nothing is live before the stream.
            await self.reply(action_id, "Success",
                             "EventList: start\r\nMessage: Channels will follow")
            await self.write(f"Event: CoreShowChannelsComplete\r\nActionID: {action_id}\r\n"
                             f"EventList: Complete\r\nListItems: 0\r\n\r\n".encode())
        elif name == "logoff":
            await self.reply(action_id, "Goodbye", "Message: Thanks for all the fish.")
            return False
        else:
            await self.reply(action_id, "Error", "Message: Invalid/unknown command")
        return True

    async def reply(self, action_id: str, response: str, extra: str) -> None:
        text = f"Response: {response}\r\nActionID: {action_id}\r\n{extra}\r\n\r\n"
        await self.write(text.encode("utf-8"))

    async def write(self, data: bytes) -> None:
        async with self.lock:
            self.writer.write(data)
            await self.writer.drain()

    async def send_stream(self) -> None:
        if not self.paced:
            for chunk in self.stream.chunks:
                await self.write(chunk)
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        due, frames = self.stream.due, self.stream.frames
        sent = 0
        while sent < len(frames):
            now = loop.time() - start
            ready = bisect.bisect_right(due, now, lo=sent)
            if ready > sent:
                await self.write(b"".join(frames[sent:ready]))
                sent = ready
            else:
                await asyncio.sleep(due[sent] - now)


async def serve(args: argparse.Namespace) -> None:
    stream = build(args.calls, args.concurrency, args.filter, args.rate)
    paced = args.rate > 0

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Session(stream, paced, reader, writer).run()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    span = stream.due[-1] if paced and stream.due else 0.0
    print(json.dumps({"port": port, "frames": len(stream.frames) - 1, "calls": args.calls,
                      "bytes": sum(len(f) for f in stream.frames), "send_seconds": span}),
          flush=True)
    async with server:
        await until_stopped()


async def until_stopped() -> None:
    """Return on SIGTERM or once stdin is closed (the parent process is gone)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    transport, _ = await loop.connect_read_pipe(lambda: _StdinWatch(stop), sys.stdin)
    try:
        await stop.wait()
    finally:
        transport.close()


class _StdinWatch(asyncio.Protocol):
    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.amiserver")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--filter", choices=sorted(FILTERS), default="none")
    parser.add_argument("--rate", type=float, default=0.0, help="calls/s; 0: as fast as possible")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
