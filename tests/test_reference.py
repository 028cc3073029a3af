"""The generated configuration reference and JSON Schema: committed, current, and true."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hangupsms.config import ConfigError, parse_config
from hangupsms.config_providers import PROVIDER_KEYS
from hangupsms.configdoc import sections
from hangupsms.reference import DOCS, MARKDOWN, SCHEMA, main, rendered

ROOT = Path(__file__).parent.parent
CONFIGS = sorted([*(ROOT / "config").glob("*.yaml"), *(ROOT / "config" / "examples").glob("*.yaml"),
                  ROOT / "hangupsms" / "demo" / "demo.yaml",
                  ROOT / "tests" / "fixtures" / "ami" / "reference.yaml"])


class _Loader(yaml.SafeLoader):
    """YAML as editors read it for a schema: a date-like scalar stays a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@cache
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DOCS / SCHEMA).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def test_the_committed_reference_and_schema_are_what_the_generator_writes() -> None:
    for name, content in rendered().items():
        assert (DOCS / name).read_text(encoding="utf-8") == content, (
            f"docs/{name} is stale: run `python -m hangupsms.reference`")


def test_check_mode_reports_stale_files_and_writing_them_cures_it(tmp_path: Path) -> None:
    assert main(["--check", str(tmp_path)]) == 1
    assert not (tmp_path / MARKDOWN).exists()
    assert main([str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0


def test_the_cookbook_is_all_there() -> None:
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_configuration_validates_against_the_schema(path: Path) -> None:
    errors = list(validator().iter_errors(load(path.read_text(encoding="utf-8"))))
    assert not errors, [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


BASE = """\
pbx:
  - {name: pbx1, username: u, secret: "${AMI_SECRET}", port: 5038}
database: h.db
timezone: Europe/London
phone: {default_region: GB, allowed_regions: GB}
providers:
  twilio: {kind: twilio, account_sid: AC1, auth_token: t, from: "+447400123000"}
  gateway:
    kind: http
    url: https://sms.example.com/send
    json: {to: "{{ to }}", text: "{{ body }}", n: 1}
  modem: {kind: ami-gsm, device: dongle0, validity: 60}
templates:
  short: "Hello {{ customer_name }}"
  long: {text: "Hello again", max_segments: 2}
rules:
  - name: r1
    when:
      did: "4000"
      queue: [sales, support]
      disposition: no_answer
      time: {days: mon, from: "09:00", to: "17:30"}
    send: {template: short, to: customer, via: twilio}
  - name: r2
    when: {time: [{from: "22:00", to: "06:00"}, {days: [Sat, sunday], from: "00:00", to: "24:00"}]}
    send: {template: long, to: "+447400123777", via: modem}
agi: {port: 0}
retention: {days: 30}
"""

# (what is changed, old text, new text): each makes the file invalid for the parser.
BROKEN = [
    ("unknown top key", "database: h.db", "database: h.db\nbogus: 1"),
    ("missing timezone", "timezone: Europe/London\n", ""),
    ("a twilio key on http", "url: https://sms.example.com/send",
     "url: https://sms.example.com/send\n    account_sid: AC1"),
    ("unknown kind", "kind: ami-gsm", "kind: smpp"),
    ("validity out of range", "validity: 60", "validity: 0"),
    ("port out of range", "port: 5038", "port: 70000"),
    ("bad direction", "did: \"4000\"", "direction: sideways"),
    ("empty queue list", "queue: [sales, support]", "queue: []"),
    ("a window without 'to'", ', to: "17:30"', ""),
    ("an unknown day", "days: mon", "days: funday"),
    ("max_segments 0", "max_segments: 2", "max_segments: 0"),
    ("a template mapping without text", '{text: "Hello again", max_segments: 2}',
     "{max_segments: 2}"),
    ("retention without days", "retention: {days: 30}", "retention: {every_hours: 1}"),
    ("twilio without from", ', from: "+447400123000"', ""),
    ("http with form and json", "json: {to:", "form: {a: \"{{ body }}\"}\n    json: {to:"),
    ("negative rate", "device: dongle0,", "device: dongle0, rate: -1,"),
    ("mobile_only not a boolean", "allowed_regions: GB}", "allowed_regions: GB, mobile_only: [1]}"),
]


def test_the_schema_accepts_every_shape_the_parser_accepts() -> None:
    parse_config(BASE, "h.yaml", {"AMI_SECRET": "s"})
    errors = list(validator().iter_errors(load(BASE)))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize(("old", "new"), [(o, n) for _, o, n in BROKEN],
                         ids=[name for name, _, _ in BROKEN])
def test_the_schema_rejects_what_the_parser_rejects(old: str, new: str) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    with pytest.raises(ConfigError):
        parse_config(text, "h.yaml", {"AMI_SECRET": "s"})
    assert list(validator().iter_errors(load(text)))


def test_a_number_may_come_from_the_environment() -> None:
    text = BASE.replace("port: 5038", 'port: "${AMI_PORT}"')
    assert parse_config(text, "h.yaml", {"AMI_SECRET": "s", "AMI_PORT": "5039"}).pbx[0].port == 5039
    assert not list(validator().iter_errors(load(text)))


def test_every_key_is_documented_and_every_provider_key_is_there() -> None:
    parts = sections()
    undocumented = [f"{p.path}.{k.name}" for p in parts for k in p.keys if not k.doc]
    assert not undocumented
    for kind, keys in PROVIDER_KEYS.items():
        part = next(p for p in parts if p.anchor == f"provider-{kind}")
        assert [key.name for key in part.keys] == list(keys)
    text = (DOCS / MARKDOWN).read_text(encoding="utf-8")
    for part in parts:
        assert f'<a id="{part.anchor}"></a>' in text


def test_the_readme_links_the_reference() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/configuration.md" in readme and "docs/hangupsms.schema.json" in readme
