"""`hangupsms guard`, `incident` and the policy lines of `check`, on a real database file."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import yaml

from hangupsms.cli import EXIT_OK, main
from hangupsms.policycli import EXIT_TRIPPED
from hangupsms.policystore import PolicyStore
from hangupsms.store import Store
from tests.policylab import reference_with, rule


def _config(tmp_path: Path, raw: dict[str, Any] | None = None) -> str:
    raw = dict(raw or reference_with())
    raw["database"] = str(tmp_path / "h.db")
    raw["providers"] = {"twilio": {"kind": "console"}}
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return str(path)


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


async def _trip(path: Path) -> None:
    store = await Store.open(path)
    try:
        await PolicyStore(store).trip("31 messages to prefix +336123 in the last hour", 1e9)
    finally:
        await store.close()


def test_guard_status_tells_tripped_or_clear_and_release_clears_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _run("guard", "-c", config, "status") == (
        EXIT_OK, "guard: clear; tripped 0 time(s) so far\n")
    asyncio.run(_trip(tmp_path / "h.db"))
    code, out = _run("guard", "status", "-c", config)
    assert code == EXIT_TRIPPED
    assert "TRIPPED" in out and "prefix +336123" in out and "0 message(s) held" in out
    assert _run("guard", "-c", config, "release") == (
        EXIT_OK, "guard released; 0 held message(s) queued for sending\n")
    assert _run("guard", "-c", config, "status") == (
        EXIT_OK, "guard: clear; tripped 1 time(s) so far\n")


def test_incident_on_off_is_stored_for_the_running_daemon(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _run("incident", "-c", config, "status") == (EXIT_OK, "incident: off\n")
    code, out = _run("incident", "-c", config, "on", "--text", "Flights to LHR cancelled.",
                     "--replace")
    assert code == EXIT_OK
    assert "(replaces each message): Flights to LHR cancelled." in out
    assert "incident: on since" in _run("incident", "-c", config, "status")[1]
    assert _run("incident", "-c", config, "off") == (EXIT_OK, "incident: off\n")


def test_check_prints_per_rule_category_windows_and_caps(tmp_path: Path) -> None:
    raw = reference_with(policy={
        "categories": {"marketing": {"footers": {"default": "Reply STOP to opt out"}}},
        "budget": [{"max": 3, "per": "7d"}],
    })
    raw["templates"]["followup"] = {"text": raw["templates"]["followup"],
                                    "category": "marketing"}
    rule(raw, "missed")["send"]["delay"] = "2m"
    rule(raw, "outbound-followup")["priority"] = 3
    code, out = _run("check", "-c", _config(tmp_path, raw))
    assert code == EXIT_OK, out
    section = out.split("policy per rule:\n", 1)[1].split("  contact budget", 1)[0]
    lines = {line.split(":", 1)[0].strip(): line for line in section.splitlines()}
    assert lines["thanks"].endswith("service; priority 0; windows: any time; caps: none")
    assert "after 2m; cancelled by a later answered call" in lines["missed"]
    followup = lines["outbound-followup"]
    assert "marketing; priority 3; windows: default every day 08:00-21:00" in followup
    assert "US every day 08:00-21:00; CN every day 08:00-21:00" in followup
    assert "caps: 1 per 1d, 3 per 1w" in followup
    assert "contact budget per recipient (all rules): 3 per 1w" in out
    assert "fraud guard: 30/h per prefix (+6 digits), 1000/h, 10000/day" in out


def test_preview_shows_what_would_wait_and_why(tmp_path: Path) -> None:
    raw = reference_with()
    rule(raw, "missed")["send"]["delay"] = "2m"
    code, out = _run("preview", "-c", _config(tmp_path, raw),
                     str(Path(__file__).parent / "fixtures" / "ami" / "c.ami"))
    assert code == EXIT_OK
    assert "  later missed -> +33612345678: deferred to " in out
    assert "rule delay 120s" in out
    assert "  send missed-alert -> +447700900777" in out


def test_preview_shows_the_incident_notice_the_sender_would_add(tmp_path: Path) -> None:
    raw = reference_with()
    rule(raw, "missed")["send"]["delay"] = "2m"
    config = _config(tmp_path, raw)
    c_ami = str(Path(__file__).parent / "fixtures" / "ami" / "c.ami")
    alert = ("  send missed-alert -> +447700900777 via twilio (1 seg, GSM-7): "
             "Missed call from +33612345678 to 4002.")
    assert f"{alert}\n" in _run("preview", "-c", config, c_ami)[1]  # no database yet

    notice = "Our lines are down until 18:00."
    assert _run("incident", "-c", config, "on", "--text", notice)[0] == EXIT_OK
    code, out = _run("preview", "-c", config, c_ami)
    assert code == EXIT_OK
    assert out.startswith(f"incident notice on (appended to each message): {notice}\n")
    assert f"{alert}\n{notice}\n" in out
    _run("incident", "-c", config, "on", "--text", notice, "--replace")
    assert ("  send missed-alert -> +447700900777 via twilio (1 seg, GSM-7): "
            f"{notice}\n") in _run("preview", "-c", config, c_ami)[1]
    _run("incident", "-c", config, "off")
    assert "incident" not in _run("preview", "-c", config, c_ami)[1]
