"""The command line, called through `main(argv)` as the console script does."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from hangupsms.cli import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, main

FIXTURES = Path(__file__).parent / "fixtures" / "ami"


def _config(tmp_path: Path, **changes: object) -> Path:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["database"] = str(tmp_path / "h.db")
    raw.update(changes)
    path = tmp_path / "hangupsms.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_check_accepts_the_reference_config_and_prints_segments(tmp_path: Path) -> None:
    code, out = _run("check", "-c", str(_config(tmp_path)))
    assert code == EXIT_OK
    assert "rules: appointment, thanks, missed, missed-alert, outbound-followup" in out
    # The worst-case caller name carries an emoji: every template with it is UCS-2.
    assert "thanks: " in out and "UCS-2" in out


def test_check_names_the_key_path_of_a_typo_and_exits_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    text = path.read_text(encoding="utf-8").replace("min_talk_seconds", "min_talk_secs")
    path.write_text(text, encoding="utf-8")
    code, _ = _run("check", "-c", str(path))
    assert code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "rules[1].when" in err and "min_talk_secs" in err
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "min_talk_secs" in t)
    assert f":{line}:" in err


def test_missing_config_file_is_a_runtime_error(tmp_path: Path) -> None:
    code, _ = _run("check", "-c", str(tmp_path / "absent.yaml"))
    assert code in (EXIT_RUNTIME, EXIT_CONFIG)
    assert code != EXIT_OK


def test_usage_error_exits_2() -> None:
    assert _run("no-such-command")[0] == 2


def test_preview_shows_the_facts_and_the_message_of_a_transcript(tmp_path: Path) -> None:
    code, out = _run("preview", "-c", str(_config(tmp_path)), str(FIXTURES / "h_unicode.ami"))
    assert code == EXIT_OK
    assert "send thanks -> +447700900123" in out
    assert 'Thanks for calling, Zoë; DROP TABLE "x" {{7*7}}. You spoke with agent1.' in out
    assert not (tmp_path / "h.db").exists()


def test_preview_shows_skip_reasons(tmp_path: Path) -> None:
    code, out = _run("preview", "-c", str(_config(tmp_path)), str(FIXTURES / "b.ami"))
    assert code == EXIT_OK
    assert "skip missed -> 13800138000: customer number '13800138000' is not textable" in out
    assert "send missed-alert -> +447700900777" in out


def test_replay_dry_run_prints_messages_and_leaves_the_database_alone(tmp_path: Path) -> None:
    code, out = _run("replay", "--dry-run", "-c", str(_config(tmp_path)),
                     str(FIXTURES / "c.ami"))
    assert code == EXIT_OK
    assert "SMS to +33612345678 [missed]: Sorry we missed your call to 4002." in out
    assert "SMS to +447700900777 [missed-alert]: Missed call from +33612345678 to 4002." in out
    assert not (tmp_path / "h.db").exists()


def test_replay_records_then_history_and_stats_read_it(tmp_path: Path) -> None:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    console = {"twilio": {"kind": "console"}}
    config = _config(tmp_path, providers=console, rules=raw["rules"])
    assert _run("replay", "-c", str(config), str(FIXTURES / "b.ami"))[0] == EXIT_OK
    assert _run("replay", "-c", str(config), str(FIXTURES / "b.ami"))[0] == EXIT_OK  # again
    code, out = _run("history", "-c", str(config), "--call", "1796413076.10")
    assert code == EXIT_OK
    lines = [line for line in out.strip().splitlines() if not line.startswith(" ")]
    attempts = [line.strip() for line in out.strip().splitlines() if line.startswith(" ")]
    assert len(lines) == 2  # replaying the same call twice created nothing new
    assert any("missed-alert -> +447700900777 [sent]" in line for line in lines)
    assert any("missed -> 13800138000 [skipped (customer number" in line for line in lines)
    # Each message shows its attempts: one accepted send for the sent one, none for the other.
    assert len(attempts) == 1 and attempts[0].endswith(" accepted")
    code, out = _run("stats", "-c", str(config))
    assert (code, out.splitlines()) == (EXIT_OK, ["sent: 1", "skipped: 1", "total: 2"])


def test_history_on_a_missing_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run("history", "-c", str(_config(tmp_path)))
    assert code == EXIT_RUNTIME
    assert "database" in capsys.readouterr().err


def test_demo_replays_real_calls_and_prints_every_message(tmp_path: Path) -> None:
    code, out = _run("demo", "--db", str(tmp_path / "demo.db"))
    assert code == EXIT_OK
    sms = [line for line in out.splitlines() if line.startswith("SMS to ")]
    assert len(sms) == 7
    assert "SMS to +447700900999 [appointment]: Your appointment A-1042 is confirmed." in sms
    assert "8 calls recorded; messages: sent 7, skipped 2" in out


def test_shipped_example_config_passes_check(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parent.parent / "config" / "hangupsms.yaml"
    for name in ("AMI_SECRET", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.setenv(name, "set-by-test")
    code, out = _run("check", "-c", str(example))
    assert code == EXIT_OK, out


EXAMPLES = sorted((Path(__file__).parent.parent / "config" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_cookbook_example_passes_check(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AMI_SECRET", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN",
                 "TWILIO_MESSAGING_SERVICE"):
        monkeypatch.setenv(name, "set-by-test")
    code, out = _run("check", "-c", str(example))
    assert code == EXIT_OK, out
    assert "ERROR" not in out


def test_the_cookbook_is_there() -> None:
    assert len(EXAMPLES) >= 5
