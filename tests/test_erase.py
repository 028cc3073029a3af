"""`hangupsms erase`: a number is gone from the raw database file and its WAL afterwards."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from hangupsms.cli import EXIT_OK, main
from hangupsms.journal import Journal
from hangupsms.models import AmiEvent
from hangupsms.store import Store
from tests.lab import TRANSCRIPTS, console_config

NUMBER = "+447700900123"  # Alice (a, a_readonly) and Zoë (h_unicode)


def _raw_bytes(tmp_path: Path) -> bytes:
    """Every byte SQLite keeps for the database: the file, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in tmp_path.glob("h.db*"))


async def _journal_a_live_call(path: Path) -> None:
    store = await Store.open(path)
    try:
        journal = Journal(store)
        journal.add(AmiEvent("lab", "NewCallerid", {"Linkedid": "9.1", "CallerIDNum": NUMBER,
                                                    "CallerIDName": "Alice"}, 0.0))
        journal.add(AmiEvent("lab", "NewCallerid", {"Linkedid": "9.2",
                                                    "CallerIDNum": "+33612345678"}, 0.0))
        await journal.flush()
    finally:
        await store.close()


def test_erase_leaves_no_trace_of_the_number_in_the_file_or_wal(tmp_path: Path) -> None:
    config = console_config(tmp_path)
    out = io.StringIO()
    for transcript in TRANSCRIPTS:
        assert main(["replay", "-c", str(config), str(transcript)], out=out) == EXIT_OK
    asyncio.run(_journal_a_live_call(tmp_path / "h.db"))
    before = _raw_bytes(tmp_path)
    assert b"447700900123" in before and b"Alice" in before and "Zoë".encode() in before

    out = io.StringIO()
    assert main(["erase", "-c", str(config), "07700 900123"], out=out) == EXIT_OK
    assert "3 call(s) pseudonymised" in out.getvalue()
    assert "1 journal row(s) deleted" in out.getvalue()

    after = _raw_bytes(tmp_path)
    for trace in (b"447700900123", b"7700900123", b"Alice", "Zoë".encode()):
        assert trace not in after, trace
    # Everyone else is still there: the erasure is about one person.
    assert b"+33612345678" in after and b"Frank" in after
    out = io.StringIO()
    assert main(["stats", "-c", str(config)], out=out) == EXIT_OK
    assert "total: 11" in out.getvalue()  # every message row stays, for the counts
