"""structlog set-up: key=value on a TTY, JSON lines otherwise; phone numbers masked, secrets
redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog


def mask_number(number: str | None) -> str:
    """`+447700900123` -> `***0123`: enough to tell messages apart, not to call anyone."""
    if not number:
        return ""
    return "***" + number[-4:] if len(number) > 4 else "***"


_REDACTED: set[str] = set()  # secret values never to be written, whatever logs them


def redact(secrets: Iterable[str]) -> None:
    """From now on, log lines show these values as `[redacted]` (library messages too)."""
    _REDACTED.update(s for s in secrets if s)


def _redact(_: object, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _REDACTED:
        for key, value in event_dict.items():
            if isinstance(value, str) and any(s in value for s in _REDACTED):
                for secret in sorted(_REDACTED, key=len, reverse=True):
                    value = value.replace(secret, "[redacted]")
                event_dict[key] = value
    return event_dict


def configure(level: str = "info", stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure structlog and route stdlib logging (panoramisk, aiohttp, twilio) through it."""
    out = stream if stream is not None else sys.stderr
    as_json = not out.isatty() if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _redact,
                        renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Third-party libraries are chatty at INFO (every request, every AMI action).
    for noisy in ("panoramisk", "twilio", "aiohttp.access", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
