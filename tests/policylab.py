"""The reference configuration with a policy, and calls built from the recorded transcripts."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from hangupsms.commands import transcript_calls
from hangupsms.config import Config, parse_config
from hangupsms.models import CompletedCall
from tests.lab import FIXTURES

REFERENCE: dict[str, Any] = yaml.safe_load((FIXTURES / "reference.yaml").read_text("utf-8"))
FRENCH_MOBILE = "+33612345678"  # the caller of c.ami, a missed call


def reference_with(**changes: Any) -> dict[str, Any]:
    """A deep copy of reference.yaml as data, top-level keys replaced by `changes`."""
    raw = copy.deepcopy(REFERENCE)
    raw.update(changes)
    return raw


def build(raw: dict[str, Any], tmp_path: Path | None = None) -> Config:
    if tmp_path is not None:
        raw = {**raw, "database": str(tmp_path / "h.db")}
    return parse_config(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), "policy.yaml")


def rule(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in raw["rules"] if r["name"] == name)


def only_call(cfg: Config, transcript: str, *, number: str | None = None,
              shift: float = 0.0) -> CompletedCall:
    """The one call of a transcript; `number` replaces the caller's, `shift` moves it in time."""
    path = FIXTURES / f"{transcript}.ami"
    if number is not None:
        text = path.read_bytes().replace(b"+447700900123", number.encode())
        path = Path(cfg.database).parent / f"{transcript}-as-{number.lstrip('+')}.ami"
        path.write_bytes(text)
    (call,) = transcript_calls(cfg, path)
    return dataclasses.replace(call, started_at=call.started_at + shift,
                               ended_at=call.ended_at + shift)
