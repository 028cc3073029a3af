"""The guides say only what the code does: their configurations parse, their commands exist.

Checked: every ```yaml block of docs/freepbx.md and every complete configuration in
README.md (a block with `pbx:` and `rules:` at the top) through the real parser; every
`hangupsms SUBCOMMAND --option` in a code span or block against the real CLI parser; every
log event a guide names against the events the package logs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from hangupsms.cli import _parser
from hangupsms.config import Config, parse_config

ROOT = Path(__file__).parent.parent
GUIDE = ROOT / "docs" / "freepbx.md"
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`([^`\n]+)`")
# A command line: at the start of a line or span, after a path's /bin/, or after `&&`.
COMMAND = re.compile(r"(?:^\s*|/bin/|&& )hangupsms ([a-z][a-z-]*)((?: +[^\s|;)`]+)*)")
ENV_VAR = re.compile(r"\$\{(\w+)\}")
LOG_EVENT = re.compile(
    r"^(ami|agi|sms|calls?|cdr|config|daemon|store|outbox|journal|systemd|retention)"
    r"\.[a-z_]+$")


def fenced(path: Path, language: str | None = None) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [body for lang, body in FENCE.findall(text) if language is None or lang == language]


def code_spans(path: Path) -> list[str]:
    """The text of every code block and inline code span."""
    text = path.read_text(encoding="utf-8")
    outside = FENCE.sub("", text)
    return fenced(path) + INLINE.findall(outside)


def parsed(block: str) -> Config:
    # Every ${VAR} a block uses gets a stand-in value, as the service's environment would.
    environ = {name: f"stand-in-{name.lower()}" for name in ENV_VAR.findall(block)}
    return parse_config(block, source="guide", environ=environ)


def complete_configs(path: Path) -> list[str]:
    return [block for block in fenced(path, "yaml")
            if re.search(r"^pbx:", block, re.MULTILINE)
            and re.search(r"^rules:", block, re.MULTILINE)]


def test_the_guide_is_linked_from_the_readme() -> None:
    assert "(docs/freepbx.md)" in README.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", [GUIDE, README], ids=["freepbx.md", "README.md"])
def test_every_complete_configuration_parses(path: Path) -> None:
    blocks = complete_configs(path)
    assert blocks, f"no complete configuration found in {path.name}"
    for block in blocks:
        cfg = parsed(block)
        assert cfg.rules and cfg.pbx


def test_every_yaml_block_of_the_guide_is_a_complete_configuration() -> None:
    assert fenced(GUIDE, "yaml") == complete_configs(GUIDE)


def test_the_guides_agi_and_cdr_settings_are_what_the_dialplan_lines_use() -> None:
    main, cdr = (parsed(block) for block in fenced(GUIDE, "yaml"))
    guide = GUIDE.read_text(encoding="utf-8")
    assert main.agi is not None
    assert f"agi://{main.agi.host}:{main.agi.port}/tag?" in guide
    [pbx] = cdr.pbx
    assert pbx.cdr is not None
    for column in pbx.cdr.variables.values():
        assert f"${{CDR({column})}}" in guide  # cdr_sqlite3_custom.conf records it


def subcommands() -> dict[str, argparse.ArgumentParser]:
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the CLI has no subcommands")


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    found = set(parser._option_string_actions)
    for action in parser._actions:  # `optout add`: the options of the nested command
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                found |= options_of(nested)
    return found


def commands_in(path: Path) -> list[tuple[str, list[str]]]:
    """(subcommand, its --options) for every `hangupsms SUBCOMMAND …` in code."""
    found = []
    for span in code_spans(path):
        for line in span.replace("\\\n", " ").splitlines():
            for name, rest in COMMAND.findall(line):
                found.append((name, re.findall(r"(?<!\S)(--?[a-z][a-z-]*)", rest)))
    return found


@pytest.mark.parametrize("path", [GUIDE, README], ids=["freepbx.md", "README.md"])
def test_every_command_and_option_named_exists(path: Path) -> None:
    known = subcommands()
    used = commands_in(path)
    assert used
    for name, options in used:
        assert name in known, f"{path.name}: no subcommand 'hangupsms {name}'"
        unknown = set(options) - options_of(known[name])
        assert not unknown, f"{path.name}: 'hangupsms {name}' has no option {unknown}"


def test_the_guide_walks_through_every_command_a_first_install_needs() -> None:
    named = {name for name, _ in commands_in(GUIDE)}
    assert {"check", "doctor", "preview", "replay", "history", "stats", "optout"} <= named
    assert "--dry-run" in {option for _, options in commands_in(GUIDE) for option in options}


def logged_events() -> set[str]:
    source = "\n".join(path.read_text(encoding="utf-8")
                       for path in (ROOT / "hangupsms").rglob("*.py"))
    return set(re.findall(r"\"([a-z]+\.[a-z_]+)\"", source))


def test_every_log_event_the_guide_names_is_logged_by_the_code() -> None:
    named = {span for span in INLINE.findall(GUIDE.read_text(encoding="utf-8"))
             if LOG_EVENT.match(span.split()[0])}
    events = {span.split()[0] for span in named}
    assert len(events) >= 20  # the troubleshooting table
    assert events - logged_events() == set()
