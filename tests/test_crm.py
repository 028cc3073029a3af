"""`customers show`, `export` and `report --html` over what a running daemon recorded."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from pathlib import Path

from hangupsms.cli import EXIT_OK, main
from tests.webrig import CUSTOMER, FRENCH, inbound_form, status_form, web_rig


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


async def _activity(tmp_path: Path) -> None:
    """Alice clicks her link and rates 5; the French caller opts out."""
    async with web_rig(tmp_path) as rig:
        [sms] = [m for m in rig.twilio.accepted if m.to == CUSTOMER]
        token = sms.body.rsplit("/r/", 1)[1]
        async with rig.http.get(f"{rig.base}/r/{token}", allow_redirects=False) as answer:
            assert answer.status == 302
        await rig.post("/twilio/inbound", inbound_form("SM1", "5"))
        await rig.post("/twilio/inbound", inbound_form("SM2", "STOP", sender=FRENCH))
        [missed] = [m for m in rig.twilio.accepted if m.to == FRENCH]
        await rig.post("/twilio/status",
                       status_form(missed.sid, "undelivered", to=FRENCH, error_code="30003"))


def test_customers_export_and_offline_report(tmp_path: Path) -> None:
    asyncio.run(_activity(tmp_path))
    config = str(tmp_path / "h.yaml")
    code, shown = _run("customers", "-c", config, "show", "07700 900123")
    assert code == EXIT_OK
    assert "name: Alice\n" in shown and "calls: 1\n" in shown and "ratings: 5\n" in shown
    assert ("tags: answered;clicked:offer;did:4000;direction:inbound;queue:support;rated:5\n"
            in shown)
    assert _run("customers", "-c", config, "show", "+447700900999")[1] == (
        "+447700900999: nothing recorded\n")

    code, text = _run("export", "-c", config, "--since", "2000-01-01", "--format", "csv")
    assert code == EXIT_OK
    rows = {row["number"]: row for row in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {CUSTOMER, FRENCH}
    assert rows[FRENCH]["tags"] == "did:4002;direction:inbound;missed;opted-out"
    assert rows[FRENCH]["suppressed"] == "True" and rows[CUSTOMER]["clicks"] == "1"
    code, text = _run("export", "-c", config, "--since", "2000-01-01", "--format", "jsonl")
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["number"] for r in records] == sorted([CUSTOMER, FRENCH])
    assert records[sorted([CUSTOMER, FRENCH]).index(CUSTOMER)]["ratings"] == [5]
    assert _run("export", "-c", config, "--since", "2999-01-01")[1].splitlines() == [
        "number,name,calls,first_call,last_call,messages_sent,clicks,ratings,tags,suppressed"]

    history = _run("history", "-c", config, "--number", FRENCH)[1]
    assert "missed -> +33612345678 [sent, undelivered 30003]" in history

    page = tmp_path / "report.html"
    assert _run("report", "-c", config, "--html", str(page))[0] == EXIT_OK
    html = page.read_text(encoding="utf-8")
    assert len(re.findall(r'<svg class="chart"', html)) == 6
    # Self-contained: nothing fetched from anywhere, no script at all.
    assert "<script" not in html and "src=" not in html and "<link" not in html
    assert CUSTOMER not in html and FRENCH not in html


def test_erase_leaves_no_trace_in_replies_clicks_and_ratings(tmp_path: Path) -> None:
    asyncio.run(_activity(tmp_path))
    config = str(tmp_path / "h.yaml")
    assert _run("erase", "-c", config, CUSTOMER)[0] == EXIT_OK
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("h.db*"))
    assert CUSTOMER.encode() not in raw and CUSTOMER[1:].encode() not in raw
    # The rating still counts for the agent; the number is gone.
    code, text = _run("export", "-c", config, "--since", "2000-01-01", "--format", "jsonl")
    assert code == EXIT_OK
    assert [json.loads(line)["number"] for line in text.splitlines()] == [FRENCH]
    page = tmp_path / "report.html"
    _run("report", "-c", config, "--html", str(page))
    assert "<td>agent1</td><td class=\"n\">1</td>" in page.read_text(encoding="utf-8")
