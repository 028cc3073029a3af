"""The lab's stand-in for Asterisk's `cdr_sqlite3_custom`: CDR rows from a replayed stream.

The fake AMI server (`replay`) hands every event it plays, sent or lost, to a `CdrWriter`,
which writes a row for each `Cdr` event into a SQLite file laid out as the README tells a
sysadmin to configure `cdr_sqlite3_custom.conf`: Asterisk's own columns plus `linkedid` and
one column per HANGUPSMS_* variable (set with `Set(CDR(hangupsms_order)=…)` in a dialplan).
Asterisk writes its CDRs whether or not an AMI client listens; so does this.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from hangupsms.frames import Frame

LAB_VARIABLES = ("HANGUPSMS_TEMPLATE", "HANGUPSMS_ORDER")
# (column, the Cdr event header it comes from)
_COLUMNS = (
    ("start", "StartTime"), ("answer", "AnswerTime"), ("end", "EndTime"),
    ("clid", "CallerID"), ("src", "Source"), ("dst", "Destination"),
    ("dcontext", "DestinationContext"), ("channel", "Channel"),
    ("dstchannel", "DestinationChannel"), ("lastapp", "LastApplication"),
    ("lastdata", "LastData"), ("duration", "Duration"), ("billsec", "BillableSeconds"),
    ("disposition", "Disposition"), ("uniqueid", "UniqueID"),
)
_MAX_CHANNELS = 200_000  # Uniqueid -> Linkedid memory: the replay of a long stream stays bounded


def lab_variable_columns(variables: Sequence[str] = LAB_VARIABLES) -> dict[str, str]:
    """The `pbx[].cdr.variables` mapping for the lab's file: HANGUPSMS_ORDER -> hangupsms_order."""
    return {name: name.lower() for name in variables}


class CdrWriter:
    def __init__(self, path: Path, variables: Sequence[str] = LAB_VARIABLES) -> None:
        self.path = path
        self._variables = tuple(variables)
        self._uids: dict[str, str] = {}
        self._values: dict[str, dict[str, str]] = {}  # Linkedid -> variable -> value
        self.rows = 0
        columns = [c for c, _ in _COLUMNS] + ["linkedid"] + [v.lower() for v in self._variables]
        self._insert = (f"INSERT INTO cdr ({', '.join(columns)}) "  # noqa: S608 - fixed names
                        f"VALUES ({', '.join('?' * len(columns))})")
        db = self._connect()
        try:
            db.execute(f"CREATE TABLE IF NOT EXISTS cdr ({', '.join(columns)})")
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0)
        db.execute("PRAGMA synchronous = OFF")  # the lab's file: no fsync per row
        return db

    def happened(self, frame: Frame) -> None:
        """One event Asterisk produced (whether an AMI client received it or not)."""
        name = frame.first("Event")
        if name == "Newchannel":
            uniqueid = frame.first("Uniqueid") or ""
            self._uids[uniqueid] = frame.first("Linkedid") or uniqueid
            if len(self._uids) > _MAX_CHANNELS:
                del self._uids[next(iter(self._uids))]
        elif name == "VarSet":
            self._remember(frame.first("Linkedid") or "", frame.first("Variable") or "",
                           frame.first("Value") or "")
        elif name == "Cdr":
            self._write(frame.as_dict())

    def _remember(self, linkedid: str, variable: str, value: str) -> None:
        if variable in self._variables and value and linkedid:
            self._values.setdefault(linkedid, {})[variable] = value
            if len(self._values) > _MAX_CHANNELS:
                del self._values[next(iter(self._values))]

    def _write(self, headers: Mapping[str, str]) -> None:
        linkedid = self._uids.get(headers.get("UniqueID", ""), "")
        values = self._values.get(linkedid, {})
        row = [headers.get(header, "") for _, header in _COLUMNS]
        row += [linkedid] + [values.get(v, "") for v in self._variables]
        db = self._connect()
        try:
            with db:  # one transaction, committed
                db.execute(self._insert, row)
        finally:
            db.close()
        self.rows += 1
