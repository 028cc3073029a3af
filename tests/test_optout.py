"""The suppression list and `hangupsms optout` on a real database file."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from hangupsms.cli import EXIT_OK, main
from hangupsms.store import Store
from hangupsms.suppression import ERASED_PREFIX, SuppressionList
from tests.lab import console_config


def _raw_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("h.db*"))


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


async def _log(path: Path) -> list[tuple[str, str, str, str]]:
    store = await Store.open(path)
    try:
        rows = await store.rows("SELECT number, action, source, reason FROM suppression_log"
                                " ORDER BY id")
        return [(r[0], r[1], r[2], r[3]) for r in rows]
    finally:
        await store.close()


def test_add_remove_list_normalise_numbers_and_log_every_change(tmp_path: Path) -> None:
    config = str(console_config(tmp_path))
    assert _run("optout", "-c", config, "add", "07700 900123", "--reason", "asked on the phone") \
        == (EXIT_OK, "+447700900123: suppressed\n")
    assert _run("optout", "add", "+447700900123", "-c", config)[1] \
        == "+447700900123: already suppressed\n"
    code, listing = _run("optout", "-c", config, "list")
    assert code == EXIT_OK
    assert "+447700900123\t" in listing and "asked on the phone" in listing
    assert listing.endswith("1 suppressed number(s)\n")
    assert _run("optout", "-c", config, "remove", "+447700900123")[1] \
        == "+447700900123: no longer suppressed\n"
    assert _run("optout", "-c", config, "remove", "+447700900123")[1] \
        == "+447700900123: was not suppressed\n"
    assert asyncio.run(_log(tmp_path / "h.db")) == [
        ("+447700900123", "add", "cli", "asked on the phone"),
        ("+447700900123", "remove", "cli", "removed by hand"),
    ]


def test_a_non_number_is_refused(tmp_path: Path) -> None:
    code, out = _run("optout", "-c", str(console_config(tmp_path)), "add", "anonymous")
    assert code == 1 and "'anonymous' is not a phone number" in out


def test_import_is_all_or_nothing_and_names_bad_lines(tmp_path: Path) -> None:
    config = str(console_config(tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text("number,reason\n+447700900123,stop\n# comment\n\nnot-a-number,x\n",
                   encoding="utf-8")
    code, out = _run("optout", "-c", config, "import", str(bad))
    assert code == 1
    assert f"{bad}:5: 'not-a-number' is not a phone number" in out
    assert "nothing imported" in out
    assert _run("optout", "-c", config, "list")[1] == "0 suppressed number(s)\n"

    good = tmp_path / "good.txt"
    good.write_text("07700 900123\n+33612345678\n+447700900123\n", encoding="utf-8")
    assert _run("optout", "-c", config, "import", str(good))[1] \
        == "2 number(s) suppressed, 0 already were\n"
    assert _run("optout", "-c", config, "import", str(good))[1] \
        == "0 number(s) suppressed, 2 already were\n"


async def test_an_erased_number_stays_suppressed_without_being_stored(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "h.db")
    try:
        suppressions = SuppressionList(store)
        await suppressions.add("+447700900123", reason="STOP", source="sms", now=1.0)
        assert await suppressions.erase("+447700900123")
        assert await suppressions.contains("+447700900123")
        assert not await suppressions.contains("+447700900124")
        [entry] = await suppressions.entries()
        assert entry.number.startswith(ERASED_PREFIX) and entry.reason == "STOP"
        assert await suppressions.suppressed_among(
            ["+447700900123", "+447700900124"]) == {"+447700900123"}
    finally:
        await store.close()
    raw = await asyncio.to_thread(_raw_bytes, tmp_path)
    assert b"447700900123" not in raw  # not in the file, its WAL, nor the log table


async def test_each_database_has_its_own_hash_key(tmp_path: Path) -> None:
    forms = []
    for name in ("one.db", "two.db"):
        store = await Store.open(tmp_path / name)
        try:
            suppressions = SuppressionList(store)
            await suppressions.add("+447700900123", reason="STOP", source="sms", now=1.0)
            await suppressions.erase("+447700900123")
            forms.append((await suppressions.entries())[0].number)
        finally:
            await store.close()
    assert forms[0] != forms[1]
