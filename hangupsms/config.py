"""YAML configuration into frozen, validated objects; every error names its key path and line."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yaml
from jinja2 import TemplateSyntaxError

from hangupsms.config_policy import caps, check_marketing, duration, read_policy
from hangupsms.config_providers import read_providers, require_text
from hangupsms.config_web import check_template_functions, read_web
from hangupsms.models import Direction, Disposition
from hangupsms.phone import check_number
from hangupsms.render import sandbox
from hangupsms.settings import (
    CATEGORIES,
    EMPTY,
    GATEWAY_VARIABLES,
    AgentConfig,
    AgiConfig,
    CdrConfig,
    Config,
    JsonTemplate,
    PbxConfig,
    PhoneConfig,
    ProviderConfig,
    RetentionConfig,
    Rule,
    RuleMatch,
    RuleSend,
    TemplateConfig,
    TimeWindow,
    WebConfig,
)
from hangupsms.yamlnodes import At, NodeReader
from hangupsms.yamlnodes import ConfigError as ConfigError

__all__ = [
    "EMPTY",
    "GATEWAY_VARIABLES",
    "AgentConfig",
    "AgiConfig",
    "CdrConfig",
    "Config",
    "ConfigError",
    "JsonTemplate",
    "PbxConfig",
    "PhoneConfig",
    "ProviderConfig",
    "RetentionConfig",
    "Rule",
    "RuleMatch",
    "RuleSend",
    "TemplateConfig",
    "TimeWindow",
    "WebConfig",
    "load_config",
    "parse_config",
]

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

TOP_KEYS = (
    "pbx", "database", "timezone", "phone", "providers", "templates", "rules", "agents",
    "max_customer_name", "agi", "retention", "policy", "web",
)  # fmt: skip
TOP_REQUIRED = ("pbx", "database", "timezone", "providers", "templates", "rules")
PBX_BOUNDS = {"port": (1, 65535), "max_frame_bytes": (1024, None), "max_calls": (1, None)}
# Required keys and integer bounds of the other sections (the reference reads them too).
PBX_REQUIRED = ("name", "username", "secret")
PHONE_BOUNDS = {"internal_max_digits": (0, 15)}
AGI_BOUNDS = {"port": (0, 65535)}
RETENTION_REQUIRED = ("days",)
RETENTION_BOUNDS = {"days": (1, None)}
TEMPLATE_KEYS = ("text", "max_segments", "category")
TEMPLATE_REQUIRED = ("text",)
MAX_SEGMENTS = (1, 20)
MAX_CUSTOMER_NAME = (1, 1000)
RULE_KEYS = ("name", "when", "send", "priority")
RULE_REQUIRED = ("name", "send")
SEND_KEYS = ("template", "to", "via", "delay", "after", "at", "expires_after",
             "cancel_if_answered", "caps")
SEND_REQUIRED = ("template", "to", "via")
WINDOW_REQUIRED = ("from", "to")
_RECIPIENTS = ("customer", "agent", "notify")


def _keys(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(spec.name.rstrip("_") for spec in dataclasses.fields(cls))


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Reads and validates the file at `path`; a relative `database` is taken from its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read the configuration: {exc}", None, str(path)) from exc
    return parse_config(text, str(path), environ, base_dir=path.parent)


def parse_config(
    text: str,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    *,
    base_dir: Path | None = None,
) -> Config:
    """Validates configuration `text`; `${VAR}` comes from `environ` (default: os.environ).

    A relative `database` is taken from `base_dir`, by default the current directory.
    """
    reader = NodeReader(source, os.environ if environ is None else environ)
    top = reader.mapping(reader.document(text), TOP_KEYS, TOP_REQUIRED)
    phone = _phone(reader, top.get("phone"))
    pbx_list = _pbx_list(reader, top["pbx"], base_dir or Path.cwd())
    providers = read_providers(reader, top["providers"], [p.name for p in pbx_list])
    templates = _templates(reader, top["templates"])
    name_cap = top.get("max_customer_name")
    policy = read_policy(reader, top.get("policy"), _windows)
    rules = _rules(reader, top["rules"], _Targets(templates, providers, phone))
    check_marketing(reader, top.get("policy") or top["rules"], policy, templates,
                    {rule.send.template for rule in rules}, phone.allowed_regions)
    web = read_web(reader, top.get("web"), rules)
    check_template_functions(reader, top["templates"], templates, web)
    if web is not None:
        callback = web.public_url + "/twilio/status"
        providers = {name: dataclasses.replace(p, status_callback=callback)
                     if p.kind == "twilio" else p for name, p in providers.items()}
    return Config(
        pbx=pbx_list,
        database=_database(reader, top["database"], base_dir or Path.cwd()),
        timezone=_timezone(reader, top["timezone"]),
        phone=phone,
        providers=MappingProxyType(providers),
        templates=MappingProxyType(templates),
        rules=rules,
        agents=MappingProxyType(_agents(reader, top.get("agents"), phone)),
        max_customer_name=64 if name_cap is None else reader.integer(name_cap, *MAX_CUSTOMER_NAME),
        agi=_agi(reader, top.get("agi"), pbx_list),
        retention=_retention(reader, top.get("retention")),
        policy=policy,
        web=web,
        source=source,
    )


def _retention(reader: NodeReader, at: At | None) -> RetentionConfig | None:
    if at is None:
        return None
    nodes = reader.mapping(at, _keys(RetentionConfig), RETENTION_REQUIRED)
    return reader.fill(nodes, RetentionConfig, RETENTION_BOUNDS)


def _agi(reader: NodeReader, at: At | None, pbx: tuple[PbxConfig, ...]) -> AgiConfig | None:
    if at is None:
        return None
    nodes = reader.mapping(at, _keys(AgiConfig), ())
    agi = reader.fill(nodes, AgiConfig, AGI_BOUNDS)
    names = [p.name for p in pbx]
    if not agi.pbx:
        if len(names) != 1:
            raise reader.error(at, "name the pbx whose calls the AGI server tags ('pbx:')")
        return dataclasses.replace(agi, pbx=names[0])
    if agi.pbx not in names:
        raise reader.error(nodes["pbx"], f"unknown pbx '{agi.pbx}'; expected one of: "
                           + ", ".join(names))
    return agi


def _pbx_list(reader: NodeReader, at: At, base_dir: Path) -> tuple[PbxConfig, ...]:
    out: list[PbxConfig] = []
    for item in reader.sequence(at):
        nodes = reader.mapping(item, _keys(PbxConfig), PBX_REQUIRED)
        cdr = nodes.get("cdr")
        pbx = reader.fill(nodes, PbxConfig, PBX_BOUNDS,
                          cdr=None if cdr is None else _cdr(reader, cdr, base_dir))
        require_text(reader, nodes, "name", pbx.name)
        require_text(reader, nodes, "username", pbx.username)
        require_text(reader, nodes, "secret", pbx.secret)
        if pbx.name in {seen.name for seen in out}:
            raise reader.error(nodes["name"], f"duplicate PBX name '{pbx.name}'")
        out.append(pbx)
    if not out:
        raise reader.error(at, "at least one PBX is needed")
    return tuple(out)


CDR_REQUIRED = ("sqlite",)
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _cdr(reader: NodeReader, at: At, base_dir: Path) -> CdrConfig:
    nodes = reader.mapping(at, _keys(CdrConfig), CDR_REQUIRED)
    variables: dict[str, str] = {}
    if "variables" in nodes:
        for name, column_at in reader.entries(nodes["variables"]):
            variables[name] = _column(reader, column_at)
    cdr = reader.fill(nodes, CdrConfig, sqlite=_database(reader, nodes["sqlite"], base_dir),
                      variables=MappingProxyType(variables))
    _column(reader, nodes.get("table"))
    if cdr.timezone:
        _timezone(reader, nodes["timezone"])
    return cdr


def _column(reader: NodeReader, at: At | None) -> str:
    """A table or column name: quoted into SQL, so only a plain identifier is accepted."""
    if at is None:
        return ""
    name = reader.text(at)
    if not _COLUMN.fullmatch(name):
        raise reader.error(at, f"'{name}' is not a plain SQL name (letters, digits, _)")
    return name


def _database(reader: NodeReader, at: At, base_dir: Path) -> Path:
    text = reader.text(at)
    if not text.strip():
        raise reader.error(at, "must not be empty")
    path = Path(text)
    return path if path.is_absolute() else (base_dir / path).absolute()


def _timezone(reader: NodeReader, at: At) -> str:
    name = reader.text(at)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise reader.error(at, f"unknown time zone '{name}' (e.g. Europe/London)") from exc
    return name


def _phone(reader: NodeReader, at: At | None) -> PhoneConfig:
    if at is None:
        return PhoneConfig()
    nodes = reader.mapping(at, _keys(PhoneConfig))
    phone = reader.fill(nodes, PhoneConfig, PHONE_BOUNDS)
    if "number_check" in nodes:
        reader.choice(nodes["number_check"], ("valid", "possible"), "number check")
    default = _region(reader, nodes["default_region"]) if "default_region" in nodes else None
    allowed = nodes.get("allowed_regions")
    return dataclasses.replace(
        phone,
        default_region=default or phone.default_region,
        allowed_regions=phone.allowed_regions
        if allowed is None
        else tuple(_region(reader, item) for item in reader.items(allowed)),
    )


def _region(reader: NodeReader, at: At) -> str:
    code = reader.text(at).upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise reader.error(at, f"unknown region code '{code}' (ISO 3166, e.g. GB, FR, US)")
    return code


def _templates(reader: NodeReader, at: At) -> dict[str, TemplateConfig]:
    environment = sandbox()
    out: dict[str, TemplateConfig] = {}
    for name, item in reader.entries(at):
        max_segments: int | None = None
        category = "service"
        if isinstance(item.node, yaml.MappingNode):
            nodes = reader.mapping(item, TEMPLATE_KEYS, TEMPLATE_REQUIRED)
            text_at = nodes["text"]
            if "max_segments" in nodes:
                max_segments = reader.integer(nodes["max_segments"], *MAX_SEGMENTS)
            if "category" in nodes:
                category = reader.choice(nodes["category"], CATEGORIES, "category")
        else:
            text_at = item
        text = reader.text(text_at)
        if not text.strip():
            raise reader.error(text_at, "the template is empty")
        try:
            environment.from_string(text)
        except TemplateSyntaxError as exc:
            where = f"template line {exc.lineno}: " if exc.lineno else ""
            raise reader.error(text_at, f"{where}syntax error: {exc.message}") from exc
        except (ValueError, OverflowError, RecursionError) as exc:  # 4,300-digit literal, nesting
            raise reader.error(text_at, f"cannot compile: {type(exc).__name__}") from exc
        out[name] = TemplateConfig(name, text, max_segments, category)
    return out


def _agents(reader: NodeReader, at: At | None, phone: PhoneConfig) -> dict[str, AgentConfig]:
    out: dict[str, AgentConfig] = {}
    for agent_id, item in [] if at is None else reader.entries(at):
        nodes = reader.mapping(item, ("name", "mobile"))
        agent = reader.fill(nodes, AgentConfig, id=agent_id)
        if agent.mobile:
            agent = dataclasses.replace(agent, mobile=_number(reader, nodes["mobile"], phone))
        out[agent_id] = agent
    return out


def _number(reader: NodeReader, at: At, phone: PhoneConfig) -> str:
    raw = reader.text(at)
    check = check_number(raw, phone)
    if not check.ok or check.e164 is None:
        raise reader.error(at, f"'{raw}' is not a textable number: {check.reason}")
    return check.e164


@dataclass(frozen=True, slots=True)
class _Targets:
    """What a rule's `send:` may name."""

    templates: Mapping[str, TemplateConfig]
    providers: Mapping[str, ProviderConfig]
    phone: PhoneConfig


def _rules(reader: NodeReader, at: At, targets: _Targets) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for item in reader.sequence(at):
        nodes = reader.mapping(item, RULE_KEYS, RULE_REQUIRED)
        name = reader.text(nodes["name"])
        require_text(reader, nodes, "name", name)
        if name in {rule.name for rule in out}:
            raise reader.error(nodes["name"], f"duplicate rule name '{name}'")
        when = _when(reader, nodes["when"]) if "when" in nodes else RuleMatch()
        priority = reader.integer(nodes["priority"], None) if "priority" in nodes else 0
        send = _send(reader, nodes["send"], targets, default_cancel=when.answered is False)
        out.append(Rule(name, when, send, priority))
    return tuple(out)


def _send(reader: NodeReader, at: At, targets: _Targets, *, default_cancel: bool) -> RuleSend:
    nodes = reader.mapping(at, SEND_KEYS, SEND_REQUIRED)
    template = reader.choice(nodes["template"], tuple(targets.templates), "template")
    via = _via(reader, nodes["via"], targets.providers)
    to = reader.text(nodes["to"])
    if to not in _RECIPIENTS:
        to = _number(reader, nodes["to"], targets.phone)
    if "delay" in nodes and "after" in nodes:
        raise reader.error(nodes["after"], "give 'delay' or 'after', not both")
    wait = nodes.get("delay") or nodes.get("after")
    cancel = nodes.get("cancel_if_answered")
    return RuleSend(
        template=template, to=to, via=via,
        delay=0.0 if wait is None else duration(reader, wait),
        at=reader.clock(nodes["at"], latest=23 * 60 + 59) if "at" in nodes else None,
        expires_after=duration(reader, nodes["expires_after"]) if "expires_after" in nodes
        else None,
        cancel_if_answered=(default_cancel and to == "customer") if cancel is None
        else reader.flag(cancel),
        caps=caps(reader, nodes["caps"]) if "caps" in nodes else (),
    )


def _via(reader: NodeReader, at: At, providers: Mapping[str, ProviderConfig]) -> tuple[str, ...]:
    """One provider name, or a list of them in failover order."""
    items = reader.items(at)
    if not items:
        raise reader.error(at, "the list is empty: name at least one provider")
    names: list[str] = []
    for item in items:
        name = reader.choice(item, tuple(providers), "provider")
        if name in names:
            raise reader.error(item, f"provider '{name}' is named twice")
        names.append(name)
    return tuple(names)


def _when(reader: NodeReader, at: At) -> RuleMatch:
    nodes = reader.mapping(at, _keys(RuleMatch))
    pairs = reader.entries(nodes["vars"]) if "vars" in nodes else []
    variables = {name: reader.text(value) for name, value in pairs}
    windows = _windows(reader, nodes["time"]) if "time" in nodes else None
    match = reader.fill(nodes, RuleMatch, vars=MappingProxyType(variables), time=windows)
    _check_when(reader, nodes, match)
    return match


def _check_when(reader: NodeReader, nodes: Mapping[str, At], match: RuleMatch) -> None:
    for key in ("did", "queue", "agent", "disposition"):
        if getattr(match, key) == ():
            raise reader.error(nodes[key], "the list is empty: it would never match")
    if "direction" in nodes:
        reader.choice(nodes["direction"], tuple(Direction), "direction")
    for item in reader.items(nodes["disposition"]) if "disposition" in nodes else ():
        reader.choice(item, tuple(Disposition), "disposition")
    low, high = match.min_talk_seconds, match.max_talk_seconds
    if low is not None and high is not None and low > high:
        raise reader.error(nodes["max_talk_seconds"], "is less than min_talk_seconds")
    if match.customer_number is not None:
        try:
            re.compile(match.customer_number)
        except (re.error, OverflowError, RecursionError) as exc:
            raise reader.error(nodes["customer_number"], f"bad regular expression: {exc}") from exc


def _windows(reader: NodeReader, at: At) -> tuple[TimeWindow, ...]:
    windows = tuple(_window(reader, item) for item in reader.items(at))
    if not windows:
        raise reader.error(at, "the list is empty: it would never match")
    return windows


def _window(reader: NodeReader, at: At) -> TimeWindow:
    """`{days: [mon, fri], from: "09:00", to: "17:30"}`; `days` defaults to every day."""
    nodes = reader.mapping(at, ("days", "from", "to"), WINDOW_REQUIRED)
    days = frozenset(range(7))
    if "days" in nodes:
        days = frozenset(reader.weekday(item) for item in reader.items(nodes["days"]))
    start = reader.clock(nodes["from"], latest=23 * 60 + 59)
    end = reader.clock(nodes["to"])
    if start == end:
        raise reader.error(nodes["to"], "equals 'from': the window would be empty")
    if not days:
        raise reader.error(nodes["days"], "the list is empty: it would never match")
    return TimeWindow(days=days, start_minute=start, end_minute=end)
