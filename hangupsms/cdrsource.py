"""A PBX's CDR database (a `cdr_sqlite3_custom` file), read for calls whose events were missed.

The file belongs to Asterisk: it is opened read-only for each query (so a rotation or a
vacuum on Asterisk's side never meets a handle of ours) in a worker thread. Rows come back
as the headers of the `Cdr` AMI event they stand for, so the tracker applies them with the
same code as the events themselves.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Collection
from datetime import datetime
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from hangupsms.models import CdrRow
from hangupsms.settings import CdrConfig

# Column -> the header of the `Cdr` AMI event that carries the same value.
_REQUIRED = {
    "uniqueid": "UniqueID", "channel": "Channel", "dstchannel": "DestinationChannel",
    "disposition": "Disposition", "billsec": "BillableSeconds", "src": "Source",
    "dst": "Destination", "dcontext": "DestinationContext", "clid": "CallerID",
    "lastapp": "LastApplication", "lastdata": "LastData",
}
_TIMES = {"StartTime": ("start", "calldate"), "EndTime": ("end",)}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BATCH = 500  # linkedids per IN (…) query: well under SQLite's variable limit


class CdrError(Exception):
    """The CDR database cannot be read (missing file, table or column)."""


class SqliteCdrSource:
    def __init__(self, cfg: CdrConfig, timezone: str) -> None:
        names = [cfg.table, *cfg.variables.values()]
        bad = [name for name in names if not _IDENTIFIER.fullmatch(name)]
        if bad:  # they are put into SQL text: plain identifiers only (config checks it too)
            raise CdrError(f"not a plain SQL name: {', '.join(bad)}")
        self.cfg = cfg
        self._tz = ZoneInfo(cfg.timezone or timezone)
        self._columns: tuple[str, ...] | None = None

    async def latest_rowid(self) -> int:
        sql = f'SELECT COALESCE(MAX(rowid), 0) FROM "{self.cfg.table}"'  # noqa: S608 - see init
        rows = await asyncio.to_thread(self._query, sql, ())
        return int(rows[0][0] or 0)

    async def rows_after(self, rowid: int) -> list[CdrRow]:
        """Every row written after `rowid`, oldest first."""
        return await asyncio.to_thread(self._select, "rowid > ?", (rowid,))

    async def rows_for(self, linkedids: Collection[str]) -> list[CdrRow]:
        wanted = sorted(linkedids)
        out: list[CdrRow] = []
        for start in range(0, len(wanted), _BATCH):
            part = wanted[start:start + _BATCH]
            marks = ", ".join("?" * len(part))
            out += await asyncio.to_thread(self._select, f"linkedid IN ({marks})", tuple(part))
        return out

    # --- in the worker thread ---------------------------------------------------------------

    def _select(self, where: str, params: tuple[object, ...]) -> list[CdrRow]:
        columns = self._known_columns()
        names = ", ".join(f'"{c}"' for c in columns)
        sql = f'SELECT rowid, {names} FROM "{self.cfg.table}" WHERE {where} ORDER BY rowid'  # noqa: S608
        rows = self._query(sql, params)
        return [self._row(int(row[0]), dict(zip(columns, row[1:], strict=True))) for row in rows]

    def _known_columns(self) -> tuple[str, ...]:
        if self._columns is None:
            info = self._query(f'PRAGMA table_info("{self.cfg.table}")', ())
            present = {str(row[1]).lower() for row in info}
            if not present:
                raise CdrError(f"{self.cfg.sqlite}: no table '{self.cfg.table}'")
            wanted = ["linkedid", *_REQUIRED, *self.cfg.variables.values()]
            missing = [c for c in wanted if c.lower() not in present]
            if missing:
                raise CdrError(f"{self.cfg.sqlite}: table '{self.cfg.table}' has no column "
                               + ", ".join(missing))
            optional = [c for c in ("did", "start", "calldate", "end") if c in present]
            self._columns = tuple(dict.fromkeys([*wanted, *optional]))
        return self._columns

    def _row(self, rowid: int, values: dict[str, object]) -> CdrRow:
        def text(column: str) -> str:
            value = values.get(column)
            return "" if value is None else str(value)

        headers = {header: text(column) for column, header in _REQUIRED.items()}
        times: dict[str, float | None] = {}
        for header, candidates in _TIMES.items():
            raw = next((text(c) for c in candidates if text(c)), "")
            headers[header] = raw
            times[header] = self._epoch(raw)
        variables = {name: text(column) for name, column in self.cfg.variables.items()
                     if text(column)}
        return CdrRow(rowid, text("linkedid"), MappingProxyType(headers), text("did"),
                      MappingProxyType(variables), times["StartTime"], times["EndTime"])

    def _epoch(self, raw: str) -> float | None:
        """`2026-12-04 10:15:02` (in the CDR time zone) or an epoch number; None if neither."""
        if not raw:
            return None
        try:
            return float(raw)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(raw).replace(tzinfo=self._tz).timestamp()
        except ValueError:
            return None

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        uri = f"{self.cfg.sqlite.as_uri()}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise CdrError(f"cannot open {self.cfg.sqlite}: {exc}") from exc
        try:
            return list(db.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise CdrError(f"{self.cfg.sqlite}: {exc}") from exc
        finally:
            db.close()
