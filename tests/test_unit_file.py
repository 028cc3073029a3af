"""The shipped systemd unit: hardened to an exposure of at most 2.0 (systemd-analyze)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent / "systemd" / "hangupsms.service"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_notifies_reloads_and_keeps_broken_configs_from_looping() -> None:
    settings = _unit_settings()
    assert settings["Type"] == ["notify"] and settings["WatchdogSec"] == ["30"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["RestartPreventExitStatus"] == ["78"]  # cli.EXIT_CONFIG
    assert settings["StateDirectory"] == ["hangupsms"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_scores_the_unit_at_most_2(tmp_path: Path) -> None:
    # systemd-analyze names the unit after the file: copy it under its real name.
    unit = tmp_path / "hangupsms.service"
    shutil.copy(UNIT, unit)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    found = re.search(r"Overall exposure level for hangupsms\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0
