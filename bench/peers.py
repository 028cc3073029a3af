"""The benchmark's helper processes (fake Asterisk, fake provider), started and stopped here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 900.0  # a full-size stream takes a while to generate


@contextlib.asynccontextmanager
async def peer(module: str, *args: str) -> AsyncIterator[dict[str, Any]]:
    """Run `python -m module args` until the block ends; yields its first stdout line (JSON)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    if process.stdin is None or process.stdout is None:
        raise RuntimeError("pipes were not created")
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"{module} ended before it was ready (exit {await process.wait()})")
        info: dict[str, Any] = json.loads(line)
        yield info
    finally:
        process.stdin.close()  # the peer stops when its stdin closes
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def ami_server(calls: int, concurrency: int, *, event_filter: str = "none",
               rate: float = 0.0) -> contextlib.AbstractAsyncContextManager[dict[str, Any]]:
    """A fake Asterisk with generated traffic; `rate` 0 sends as fast as the socket takes it."""
    return peer("bench.amiserver", "--calls", str(calls), "--concurrency", str(concurrency),
                "--filter", event_filter, "--rate", str(rate))


def fake_provider() -> contextlib.AbstractAsyncContextManager[dict[str, Any]]:
    return peer("bench.fakeprovider")
