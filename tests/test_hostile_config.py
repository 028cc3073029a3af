"""Hostile YAML configurations: a Config or a ConfigError, never another exception, in bounded work.

A full configuration (every section, most optional keys) is broken one node at a time: a wrong
type, a hostile scalar, an explicit tag, an alias, a random structure, or a hostile key. Garbled
and random texts, invalid UTF-8, tabs, deep nesting and alias bombs complete the corpus. Work
is measured as lines of hangupsms code executed (sys.settrace), never as wall time.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import hangupsms
from hangupsms.config import Config, ConfigError, load_config, parse_config

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
PACKAGE = str(Path(hangupsms.__file__).parent)
BASE = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NO_SHRINK = settings(BASE, phases=[Phase.explicit, Phase.generate])
HOLE = "@@HOSTILE@@"

FULL: dict[str, Any] = {
    "pbx": [{
        "name": "lab", "host": "127.0.0.1", "port": 5038, "username": "hangupsms",
        "secret": "labsecret", "inbound_contexts": ["from-pstn"],
        "internal_contexts": ["from-internal"], "connect_timeout": 5.0, "ping_interval": 10,
        "max_frame_bytes": 65536, "call_ttl": 21600.0, "max_calls": 20000,
    }],
    "database": "hostile.db",
    "timezone": "Europe/London",
    "phone": {"default_region": "GB", "allowed_regions": ["GB", "FR"],
              "number_check": "possible", "mobile_only": False, "internal_max_digits": 6},
    "providers": {
        "twilio": {"kind": "twilio", "account_sid": "AC" + "0" * 32, "auth_token": "t0ken",
                   "from": "+447700900000", "api_url": "http://127.0.0.1:8099",
                   "timeout": 10.0, "rate": 1.0},
        "log": {"kind": "console"},
    },
    "templates": {
        "thanks": "Thanks, {{ customer_name or 'there' }}.",
        "missed": {"text": "Missed call to {{ did }}", "max_segments": 2},
    },
    "rules": [
        {"name": "thanks", "when": {
            "direction": "inbound", "answered": True, "min_talk_seconds": 1,
            "max_talk_seconds": 3600, "queue": ["support"], "did": "4000", "agent": ["agent1"],
            "disposition": ["answered"], "customer_number": "^\\+44",
            "vars": {"HANGUPSMS_TEMPLATE": "thanks"},
            "time": [{"days": ["mon", "fri"], "from": "09:00", "to": "17:30"}]},
         "send": {"template": "thanks", "to": "customer", "via": "twilio"}},
        {"name": "alert", "send": {"template": "missed", "to": "+447700900777", "via": "log"}},
    ],
    "agents": {"agent1": {"name": "Agent One", "mobile": "07700 900111"}},
    "max_customer_name": 64,
}  # fmt: skip
NodePath = tuple[str | int, ...]


def node_paths(node: Any, prefix: NodePath = ()) -> list[NodePath]:
    """Every node below `node`, containers and scalars, as key/index paths."""
    children: list[tuple[str | int, Any]] = (
        list(node.items()) if isinstance(node, dict)
        else list(enumerate(node)) if isinstance(node, list) else []
    )
    paths: list[NodePath] = []
    for key, child in children:
        paths += [(*prefix, key), *node_paths(child, (*prefix, key))]
    return paths


PATHS = node_paths(FULL)
KEY_PATHS = [path for path in PATHS if isinstance(path[-1], str)]


def with_hole(path: NodePath, in_key: bool = False) -> str:
    """FULL as YAML with the value (or the key) at `path` replaced by the HOLE marker."""
    data = copy.deepcopy(FULL)
    parent: Any = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if in_key:
        assert isinstance(last, str)
        parent[HOLE] = parent.pop(last)
    else:
        parent[last] = HOLE
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 20)


def parse_with(path: NodePath, fragment: str, in_key: bool = False) -> Config | ConfigError:
    return outcome(with_hole(path, in_key).replace(f"'{HOLE}'", fragment))


def outcome(text: str) -> Config | ConfigError:
    """The Config of `text`, or its ConfigError; any other exception fails the test."""
    try:
        return parse_config(text, "hostile.yaml", environ={}, base_dir=FIXTURES)
    except ConfigError as exc:
        assert str(exc)
        return exc
    except Exception as exc:  # any other exception is what these tests look for
        crash = f"{type(exc).__name__}: {str(exc)[:200]}"
    # Raised outside the handler: a 1,000-frame RecursionError chained to it is slow to print.
    raise AssertionError(f"parse_config raised {crash}")


WRONG_TYPES = ["~", "''", "[]", "{}", "[a, b]", "{a: 1}", "-1", "0", "1.5", "true", "'x'",
               ".nan", ".inf", "-.inf", "70000", "[[a]]", "{a: {b: c}}"]
HOSTILE_OK = [
    "'" + "x" * 10_000 + "'", "2026-01-01", "0x1F", "0o17", "1_000", "12:30", "'${HOME}'",
    "'${'", "'$${x}'", "'${1BAD}'", '"\\0"', '"\\u202e\\r\\n"', "'😀'", "!!binary aGVsbG8=",
    "!!python/object/apply:os.system ['id']", "!!python/name:os.system", "!!str 5",
    "!!timestamp junk", "!custom x", "*nowhere", "&a [*a]", "&m {k: *m}", "{? [a]: b}",
    "'<<'", "!!bool yes", "!!int 0x10", "!!float 1.5", "'{{ 7*7 }}'", "'{% for %}'", "'{{'",
    "\tx", "'" + "(" * 50 + "'", "'[[:alpha:]'", "'" + "a" * 10_000 + "': 1", "- a", "? x",
    "'\udcff'", "|", "'''",
]  # fmt: skip
# Fragments that once made parse_config raise something other than ConfigError.
ONCE_CRASHED = [
    "!!int abc", "!!int ''", "!!int 0x", "!!float abc", "!!bool maybe", "!!bool 1",
    "9" * 5000, "-" + "9" * 5000, "[" * 600 + "]" * 600, "{a: " * 600 + "1" + "}" * 600,
    "'{{ " + "9" * 5000 + " }}'", "'{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}'",
    "'a{99999999999}'", "'" + "(" * 1000 + ")" * 1000 + "'",
]  # fmt: skip


def test_the_full_configuration_is_valid() -> None:
    cfg = outcome(yaml.safe_dump(FULL, sort_keys=False))
    assert isinstance(cfg, Config)
    assert len(PATHS) > 60


def test_every_node_given_wrong_types_is_a_config_or_a_config_error() -> None:
    # Two wrong types per node, rotating, so every node and every type is tried.
    refused = 0
    for index, path in enumerate(PATHS):
        hole = with_hole(path)
        for fragment in (WRONG_TYPES[index % 17], WRONG_TYPES[(index + 7) % 17]):
            refused += isinstance(outcome(hole.replace(f"'{HOLE}'", fragment)), ConfigError)
    assert refused > len(PATHS)  # most wrong types are refused


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip().removesuffix(
        "\n...")


@given(path=st.sampled_from(PATHS), fragment=st.sampled_from(WRONG_TYPES + HOSTILE_OK)
       | YAML_VALUES.map(flow))
@settings(BASE, max_examples=150)
def test_a_hostile_value_anywhere_is_a_config_or_a_config_error(
    path: NodePath, fragment: str
) -> None:
    outcome(with_hole(path).replace(f"'{HOLE}'", fragment))


@given(path=st.sampled_from(KEY_PATHS), fragment=st.sampled_from(WRONG_TYPES + HOSTILE_OK))
@settings(BASE, max_examples=80)
def test_a_hostile_key_anywhere_is_a_config_or_a_config_error(
    path: NodePath, fragment: str
) -> None:
    outcome(with_hole(path, in_key=True).replace(f"'{HOLE}'", fragment))


@given(path=st.sampled_from(PATHS), fragment=st.sampled_from(ONCE_CRASHED))
@example(path=("database",), fragment=ONCE_CRASHED[8])  # crashed at any path
@settings(NO_SHRINK, max_examples=60, report_multiple_bugs=False)
def test_any_fragment_anywhere_is_a_config_or_a_config_error(path: NodePath, fragment: str) -> None:
    outcome(with_hole(path).replace(f"'{HOLE}'", fragment))


CRASHES = [
    pytest.param(("pbx", 0, "port"), "!!int abc", id="int-tag-on-junk"),
    pytest.param(("pbx", 0, "port"), "!!int ''", id="int-tag-on-empty"),
    pytest.param(("providers", "twilio", "timeout"), "!!float abc", id="float-tag-on-junk"),
    pytest.param(("phone", "mobile_only"), "!!bool maybe", id="bool-tag-on-junk"),
    pytest.param(("pbx", 0, "max_calls"), "9" * 5000, id="int-of-5000-digits"),
    pytest.param(("pbx", 0, "call_ttl"), "9" * 5000, id="float-field-given-5000-digits"),
    pytest.param(("database",), "[" * 600 + "]" * 600, id="deeply-nested-flow"),
    pytest.param(("templates", "thanks"), "'{{ " + "9" * 5000 + " }}'", id="jinja-huge-int"),
    pytest.param(("templates", "thanks"), "'{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}'",
                 id="jinja-deep-parens"),
    pytest.param(("rules", 0, "when", "customer_number"), "'a{99999999999}'",
                 id="regex-repeat-overflow"),
    pytest.param(("rules", 0, "when", "customer_number"), "'" + "(" * 1000 + ")" * 1000 + "'",
                 id="regex-deep-groups"),
]


@pytest.mark.parametrize(("path", "fragment"), CRASHES)
def test_a_fragment_that_once_crashed_becomes_a_config_error(
    path: NodePath, fragment: str
) -> None:
    assert isinstance(parse_with(path, fragment), ConfigError)


@given(text=st.text(st.sampled_from(list("[]{}:-&*!|>'\"#%@`?,. \t\nabc019$~")), max_size=200))
@settings(BASE, max_examples=300)
def test_random_yaml_like_text_is_a_config_or_a_config_error(text: str) -> None:
    outcome(text)


REFERENCE = (FIXTURES / "reference.yaml").read_text(encoding="utf-8")


@given(edits=st.lists(st.tuples(st.integers(0, len(REFERENCE)), st.integers(0, 12),
                                st.text(max_size=3)), min_size=1, max_size=6))
@settings(BASE, max_examples=150)
def test_a_garbled_reference_config_is_a_config_or_a_config_error(
    edits: list[tuple[int, int, str]]
) -> None:
    text = REFERENCE
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut:]
    outcome(text)


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x1b[2J"])
def test_invalid_utf8_or_control_bytes_in_the_file_are_a_config_error(
    tmp_path: Path, bad: bytes
) -> None:
    path = tmp_path / "hangupsms.yaml"
    raw = REFERENCE.encode()
    path.write_bytes(raw[:200] + bad + raw[200:])
    with pytest.raises(ConfigError):
        load_config(path, environ={})


def test_tabs_for_indentation_are_a_config_error_with_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(REFERENCE.replace("  - name: lab", "\t- name: lab"), environ={})
    assert caught.value.line is not None


def lines_run(parse: Callable[[], object]) -> int:
    """Lines of hangupsms code executed by `parse()`: the work it did, independent of speed."""
    count = 0

    def local(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        count += event == "line"
        return local

    def scope(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename.startswith(PACKAGE) else None

    previous = sys.gettrace()
    sys.settrace(scope)
    try:
        parse()
    except ConfigError:
        pass  # refused is fine: only the work it took is measured
    finally:
        sys.settrace(previous)
    return count


# Nine levels of nine aliases each: 9**9 strings if anything expanded them.
ALIAS_BOMB = "[&b0 [lol, lol, lol, lol, lol, lol, lol, lol, lol], " + ", ".join(
    f"&b{level} [{', '.join([f'*b{level - 1}'] * 9)}]" for level in range(1, 10)
) + "]"
HEAD, RULES = REFERENCE[: REFERENCE.index("rules:")], REFERENCE[REFERENCE.index("rules:"):]
BOMBED = {
    "rules": HEAD + "rules: " + ALIAS_BOMB + "\n",
    "pbx": "pbx: " + ALIAS_BOMB + "\n" + REFERENCE[REFERENCE.index("database:"):],
    "inbound_contexts": REFERENCE.replace("[from-pstn]", ALIAS_BOMB),
    "vars": REFERENCE.replace("{HANGUPSMS_TEMPLATE: appointment}",
                              "{HANGUPSMS_TEMPLATE: " + ALIAS_BOMB + "}"),
    "templates": REFERENCE.replace("templates:\n", "templates:\n  bomb: " + ALIAS_BOMB + "\n"),
    "agents": HEAD + "agents: {bomb: " + ALIAS_BOMB + "}\n" + RULES,
}


@pytest.mark.parametrize("site", sorted(BOMBED))
def test_an_alias_bomb_is_refused_without_being_expanded(site: str) -> None:
    text = BOMBED[site]
    assert text != REFERENCE
    error = outcome(text)
    assert isinstance(error, ConfigError)
    assert error.path.startswith(site) or f".{site}" in error.path
    reference_work = lines_run(lambda: parse_config(REFERENCE, environ={}))
    assert lines_run(lambda: parse_config(text, environ={})) < 2 * reference_work


def many(shape: str, count: int) -> str:
    """A configuration with `count` top-level junk keys, or `count` agents."""
    if shape == "keys":
        return "".join(f"k{n}: 0\n" for n in range(count))
    return HEAD + "agents:\n" + "".join(f"  a{n}: {{name: A}}\n" for n in range(count)) + RULES


@pytest.mark.parametrize(("shape", "count"), [("keys", 150), ("agents", 200)])
def test_the_work_grows_linearly_with_the_number_of_entries(shape: str, count: int) -> None:
    small = lines_run(lambda: parse_config(many(shape, count), environ={}))
    large = lines_run(lambda: parse_config(many(shape, 4 * count), environ={}))
    assert large < 6 * small  # 4x the entries: ~4x the work when linear, over 10x when quadratic
