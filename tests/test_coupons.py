"""coupon(): each code used once, ever; an empty pool holds the message; `coupons load`."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
import yaml

from hangupsms.cli import EXIT_OK, main
from hangupsms.config import TemplateConfig
from hangupsms.models import Encoding, PlannedMessage
from hangupsms.render import Renderer, RenderError
from hangupsms.store import Store
from hangupsms.tracking import coupon_counts, load_coupons, release_held
from tests.lab import FIXTURES
from tests.outboxrig import _call

TEMPLATE = "Sorry, {{ customer_name }}. Your code: {{ coupon('sorry') }}"


def _planned(renderer: Renderer, name: str, *, to: str = "+447700900123",
             skip: str | None = None) -> PlannedMessage:
    body = renderer.render("apology", {"customer_name": name})
    return PlannedMessage(rule="apology", recipient="customer", to=to, provider="twilio",
                          template="apology", body=body, skip_reason=skip)


def _messages(path: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT state, body, reason FROM messages ORDER BY id").fetchall()


async def test_codes_are_taken_once_and_an_empty_pool_holds_the_message(tmp_path: Path) -> None:
    renderer = Renderer({"apology": TemplateConfig("apology", TEMPLATE)})
    store = await Store.open(tmp_path / "h.db")
    try:
        assert await load_coupons(store, "sorry", ["AAA-1", "BBB-2", "AAA-1"], 1.0) == 2
        # A caller who names themselves like a coupon marker gets no code for it.
        forged = "\x00" + "0" * 16 + ":0\x00"
        calls = [_call(f"1.{i}", "+447700900123") for i in range(4)]
        await store.record_call(calls[0], "+447700900123", [_planned(renderer, "Ann")], 10.0)
        await store.record_call(calls[1], "+447700900123", [_planned(renderer, forged)], 11.0)
        # A skipped message (e.g. not textable) takes no code.
        await store.record_call(calls[2], "+447700900123",
                                [_planned(renderer, "Cy", skip="not textable")], 12.0)
        await store.record_call(calls[3], "+447700900123", [_planned(renderer, "Di")], 13.0)
        assert await coupon_counts(store) == {"sorry": (0, 2)}
        # Loading a used code again does not make it usable again.
        assert await load_coupons(store, "sorry", ["AAA-1"], 20.0) == 0
    finally:
        await store.close()
    assert _messages(tmp_path / "h.db") == [
        ("pending", "Sorry, Ann. Your code: AAA-1", None),
        ("pending", "Sorry, 0000000000000000:0. Your code: BBB-2", None),
        ("skipped", "Sorry, Cy. Your code: [coupon:sorry]", "not textable"),
        ("held", "Sorry, Di. Your code: [coupon:sorry]", "coupon pool 'sorry' is empty"),
    ]
    store = await Store.open(tmp_path / "h.db")
    try:
        assert await release_held(store, 30.0) == 0  # still no code: still held
        await load_coupons(store, "sorry", ["CCC-3"], 40.0)
        assert await release_held(store, 41.0) == 1
        assert await release_held(store, 42.0) == 0
        assert await coupon_counts(store) == {"sorry": (0, 3)}
    finally:
        await store.close()
    assert _messages(tmp_path / "h.db")[3] == ("pending", "Sorry, Di. Your code: CCC-3", None)


def test_segments_are_counted_with_a_nominal_code_not_the_marker() -> None:
    renderer = Renderer({"apology": TemplateConfig("apology", TEMPLATE, max_segments=1)},
                        max_customer_name=200)
    rendered = renderer.render("apology", {"customer_name": "A" * 120})
    # 7 + 120 + 13 + 12 nominal characters: one GSM-7 segment (the marker would be UCS-2).
    assert (rendered.segments, rendered.encoding) == (1, Encoding.GSM7)
    assert rendered.coupons[0].pool == "sorry" and rendered.coupons[0].marker in rendered.text
    with pytest.raises(RenderError, match="needs 2 segments"):
        renderer.render("apology", {"customer_name": "A" * 130})


def test_coupons_load_and_list_from_the_command_line(tmp_path: Path) -> None:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["database"] = str(tmp_path / "h.db")
    raw["providers"] = {"twilio": {"kind": "console"}}
    config = tmp_path / "h.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    codes = tmp_path / "codes.txt"
    codes.write_text("# spring campaign\nSPRING-01\nSPRING-02\n\nSPRING-01\n", encoding="utf-8")

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        return main(["coupons", "-c", str(config), *argv], out=out), out.getvalue()

    assert run("load", "spring", str(codes)) == (
        EXIT_OK, "spring: 2 code(s) added, 0 already known (a code is used once, ever)\n")
    assert run("load", "spring", str(codes))[1].startswith("spring: 0 code(s) added, 2 already")
    assert run("list") == (EXIT_OK, "spring\tunused 2\tused 0\n")
    codes.write_text("GOOD\nHAS SPACE\n", encoding="utf-8")
    assert run("load", "spring", str(codes))[0] == 1


def test_preview_shows_where_a_code_will_go(tmp_path: Path) -> None:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["database"] = str(tmp_path / "h.db")
    raw["templates"]["thanks"] = "Thanks! Your code: {{ coupon('thanks') }}"
    config = tmp_path / "h.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    out = io.StringIO()
    assert main(["preview", "-c", str(config), str(FIXTURES / "a.ami")], out=out) == EXIT_OK
    assert "Thanks! Your code: [coupon:thanks]\n" in out.getvalue()
    assert "\x00" not in out.getvalue()


def test_check_names_links_and_pools_and_warns_of_an_empty_pool(tmp_path: Path) -> None:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["database"] = str(tmp_path / "h.db")
    raw["web"] = {"public_url": "https://pbx.example.com/sms"}
    raw["templates"]["thanks"] = ("Thanks! {{ link('https://shop.example.com/', tag='shop') }}"
                                  " Your code: {{ coupon('spring') }}")
    config = tmp_path / "h.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config.chmod(0o600)  # it spells out the lab's secrets
    codes = tmp_path / "codes.txt"
    codes.write_text("CODE-1\nCODE-2\n", encoding="utf-8")

    def run(*argv: str) -> str:
        out = io.StringIO()
        assert main([*argv[:1], "-c", str(config), *argv[1:]], out=out) == EXIT_OK
        return out.getvalue()

    features = run("check").split("  web features in templates:\n", 1)[1]
    assert features == (
        "    thanks: tracked link to https://shop.example.com/ (tag shop); coupon from pool "
        "spring\n  coupon pools: no database yet; load codes before the first call "
        "(`hangupsms coupons load POOL FILE`)\n")
    run("coupons", "load", "autumn", str(codes))  # the database exists; spring is empty
    assert ("  warning: coupon pool 'spring' (thanks) has no unused code: its messages are "
            "held until `hangupsms coupons load spring FILE`\n") in run("check")
    run("coupons", "load", "spring", str(codes))
    out = run("check")
    assert "  coupon pool 'spring': 2 unused code(s)\n" in out and "warning" not in out
