"""A Twilio-compatible SMS endpoint for the benchmarks, in its own process so its work never
delays the daemon's loop: `python -m bench.fakeprovider`.

A bare asyncio protocol rather than a web framework: it notes `time.monotonic()` when the
FIRST byte of each request arrives (CLOCK_MONOTONIC is one clock for every process of the
machine, so the daemon's `AmiEvent.received_at` compares with it), answers each message
create with 201 and a Twilio-shaped JSON body, and keeps the connection alive.
`GET /bench/arrivals` returns `[[first_byte_monotonic, to], ...]` of every create so far.
It prints `{"port": N}` once listening on 127.0.0.1; it stops on SIGTERM or stdin EOF.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from urllib.parse import parse_qs

from bench.amiserver import until_stopped

_HEAD_END = b"\r\n\r\n"


class ProviderProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order."""

    sids = itertools.count(1)

    def __init__(self, arrivals: list[tuple[float, str]]) -> None:
        self._arrivals = arrivals
        self._buffer = bytearray()
        self._first_byte: float | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("a stream transport is needed")
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._first_byte is None:
            self._first_byte = time.monotonic()
        self._buffer += data
        while self._answer_one():
            self._first_byte = time.monotonic() if self._buffer else None

    def _answer_one(self) -> bool:
        """Answer the first request if it is complete; False when more bytes are needed."""
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if len(self._buffer) < end + 4 + length:
            return False
        body = bytes(self._buffer[end + 4:end + 4 + length]).decode("utf-8")
        del self._buffer[:end + 4 + length]
        method, path = head[0].split(" ")[:2]
        if method == "GET" and path.startswith("/bench/arrivals"):
            self._send(200, json.dumps(self._arrivals).encode("utf-8"))
        elif method == "POST" and path.endswith("/Messages.json"):
            form = parse_qs(body)
            to = form.get("To", [""])[0]
            self._arrivals.append((self._first_byte or time.monotonic(), to))
            self._send(201, _created(to, form.get("Body", [""])[0], path))
        else:
            self._send(404, b'{"status": 404, "message": "not found"}')
        return True

    def _send(self, status: int, payload: bytes) -> None:
        if self._transport is None:
            return
        reason = {200: "OK", 201: "Created", 404: "Not Found"}[status]
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n")
        self._transport.write(head.encode("latin-1") + payload)


def _created(to: str, body: str, path: str) -> bytes:
    account = path.split("/Accounts/", 1)[-1].split("/", 1)[0]
    sid = f"SM{next(ProviderProtocol.sids):032x}"
    return json.dumps({
        "sid": sid, "account_sid": account, "to": to, "from": None, "body": body,
        "status": "queued", "num_segments": "1", "direction": "outbound-api",
        "messaging_service_sid": None, "date_created": "Mon, 07 Dec 2026 10:00:00 +0000",
    }).encode("utf-8")


async def serve() -> None:
    arrivals: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ProviderProtocol(arrivals), "127.0.0.1", 0)
    print(json.dumps({"port": int(server.sockets[0].getsockname()[1])}), flush=True)
    async with server:
        await until_stopped()


if __name__ == "__main__":
    asyncio.run(serve())
