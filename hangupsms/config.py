"""YAML configuration into frozen, validated objects; every error names its key path and line."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yaml
from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hangupsms.models import Direction, Disposition
from hangupsms.phone import check_number
from hangupsms.render import sandbox
from hangupsms.retry import RetryPolicy
from hangupsms.yamlnodes import BOOL, FLOAT, INT, NULL, At, NodeReader
from hangupsms.yamlnodes import ConfigError as ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

EMPTY: Mapping[str, str] = MappingProxyType({})
# An http gateway's JSON body: string leaves are templates, other scalars are sent as written.
JsonTemplate: TypeAlias = (
    "str | int | float | bool | tuple[JsonTemplate, ...] | Mapping[str, JsonTemplate] | None"
)
# The variables an http gateway's form, json and query templates may use.
GATEWAY_VARIABLES = ("to", "body", "message_id", "rule")


@dataclass(frozen=True, slots=True)
class PbxConfig:
    name: str
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = ""
    secret: str = field(default="", repr=False)
    inbound_contexts: tuple[str, ...] = ("from-pstn", "from-trunk", "from-did-direct")
    internal_contexts: tuple[str, ...] = ("from-internal",)
    connect_timeout: float = 5.0
    ping_interval: float = 10.0  # seconds between Pings
    ping_timeout: float = 5.0  # a Ping unanswered this long means the peer is dead
    reconnect_min: float = 0.1  # first retry delay
    reconnect_max: float = 30.0  # cap for the backoff
    login_failure_delay: float = 60.0  # slow lane after an authentication failure
    max_frame_bytes: int = 65536
    end_grace: float = 0.2  # after LINKEDID_END, wait this long for late Cdr/Hangup events
    no_cel_grace: float = 2.0  # without CEL: after the last channel hung up
    call_ttl: float = 6 * 3600.0  # a call that never ends is evicted after this
    max_calls: int = 20000  # live calls tracked per PBX; the oldest is evicted beyond it


@dataclass(frozen=True, slots=True)
class PhoneConfig:
    default_region: str = "US"
    allowed_regions: tuple[str, ...] = ()  # empty: any region
    number_check: str = "valid"  # "valid" | "possible"
    mobile_only: bool = False
    internal_max_digits: int = 6  # numbers this short are extensions, never texted


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One `providers:` entry. `kind: http` is a generic SMS gateway::

        gateway:
          kind: http
          method: POST                  # GET or POST (default POST)
          url: "https://sms.example.com/api/send"
          headers: {Authorization: "Bearer ${SMS_TOKEN}"}   # strings, not templates
          form: {to: "{{ to }}", text: "{{ body }}", sender: "Acme"}  # or:
          json: {recipient: "{{ to }}", message: {text: "{{ body }}"}}  # nested ok
          query: {api_key: "${SMS_KEY}"}  # URL query; the only place a GET puts the message
          success_status: [200, 201]    # default: any 2xx
          success_json_path: status     # optional: a dotted path into the JSON answer
          success_value: "OK"           #   that must equal this (compared as text)
          id_json_path: data.id         # optional: the gateway's message id

    At most one of form and json (a GET takes neither); the message must reach the gateway
    through some `{{ body }}`. String values of form, json and query are Jinja2 templates
    (the sandbox of `render`) over `to`, `body`, `message_id` (the outbox id) and `rule`;
    what they insert is data, never evaluated again. Numbers, booleans and nulls in json
    are sent as written; a list index in a path is a number (`messages.0.id`).
    """

    name: str
    kind: str  # "twilio" | "http" | "console"
    account_sid: str = ""
    auth_token: str = field(default="", repr=False)
    from_: str = ""  # YAML key `from`
    messaging_service_sid: str = ""
    api_url: str = ""  # Twilio-compatible endpoint; "" means Twilio itself
    timeout: float = 10.0  # per request, seconds
    rate: float = 1.0  # messages per second
    lookup_limit: int = 100  # twilio: messages listed when checking an ambiguous send
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # keys of the same names
    method: str = "POST"  # http
    # http: the URL, headers and templates often carry an API key, so repr leaves them out.
    url: str = field(default="", repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)
    form: Mapping[str, str] | None = field(default=None, repr=False)  # field -> template
    json_: Mapping[str, JsonTemplate] | None = field(default=None, repr=False)  # YAML `json`
    query: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)
    success_status: tuple[int, ...] = ()  # http: empty means any 2xx
    success_json_path: str = ""  # http
    success_value: str | None = None  # http
    id_json_path: str = ""  # http


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    name: str
    text: str
    max_segments: int | None = None


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A weekly window: `days` (0=Monday) and [start, end) minutes after midnight.

    When `end_minute` < `start_minute` the window wraps past midnight: it opens on one of
    `days` at `start_minute` and closes at `end_minute` the next day.
    """

    days: frozenset[int]
    start_minute: int
    end_minute: int


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """The `when:` of a rule. None means "any"; every given condition must hold.

    In YAML: `direction` is one of inbound, outbound, internal, unknown; `did`, `queue`,
    `agent` and `disposition` (answered, busy, no_answer, failed) take a string or a list
    of strings (any may match); `answered` is a boolean; `min_talk_seconds` and
    `max_talk_seconds` are inclusive; `customer_number` is a regular expression; `vars`
    maps a call variable to the exact value it must have; `time` is one weekly window or
    a list of them (any may match), each `{days: [mon, tue], from: "09:00", to: "17:30"}`:
    `days` (mon … sun, default every day) are the days the window opens, `to` is
    exclusive and may be "24:00", and a `to` earlier than `from` closes the next day.
    Times are read in the configured `timezone` at the call's end.
    """

    direction: str | None = None
    did: tuple[str, ...] | None = None
    queue: tuple[str, ...] | None = None
    agent: tuple[str, ...] | None = None
    answered: bool | None = None
    disposition: tuple[str, ...] | None = None
    min_talk_seconds: int | None = None
    max_talk_seconds: int | None = None
    customer_number: str | None = None  # a regular expression, searched in the raw and E.164 forms
    vars: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    time: tuple[TimeWindow, ...] | None = None


@dataclass(frozen=True, slots=True)
class RuleSend:
    template: str
    to: str  # "customer" | "agent" | an E.164 number
    via: str  # a provider name


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: RuleMatch
    send: RuleSend


@dataclass(frozen=True, slots=True)
class AgentConfig:
    id: str
    name: str = ""
    mobile: str = ""


@dataclass(frozen=True, slots=True)
class AgiConfig:
    """The FastAGI server the dialplan tags live calls through (`agi:`; off when absent)."""

    host: str = "127.0.0.1"
    port: int = 4573
    deadline: float = 0.5  # seconds a dialplan AGI() call may wait on us at most
    pbx: str = ""  # whose calls it tags; may be left out when there is one PBX


@dataclass(frozen=True, slots=True)
class Config:
    pbx: tuple[PbxConfig, ...]
    database: Path
    timezone: str
    phone: PhoneConfig
    providers: Mapping[str, ProviderConfig]
    templates: Mapping[str, TemplateConfig]
    rules: tuple[Rule, ...]
    agents: Mapping[str, AgentConfig] = field(default_factory=dict)
    max_customer_name: int = 64  # caller-controlled text is cut to this many characters
    agi: AgiConfig | None = None
    source: str = ""


_TOP_KEYS = (
    "pbx", "database", "timezone", "phone", "providers", "templates", "rules", "agents",
    "max_customer_name", "agi",
)  # fmt: skip
_TOP_REQUIRED = ("pbx", "database", "timezone", "providers", "templates", "rules")
# RetryPolicy fields a provider entry may set (batch and idle_poll are the sender's own).
_RETRY_KEYS = (
    "max_attempts", "max_age", "base_delay", "max_delay", "throttle_delay", "lookup_settle",
    "lookup_delay", "max_lookups", "clock_skew",
)  # fmt: skip
_RETRY_BOUNDS = {"max_attempts": (1, None), "max_lookups": (1, None)}
_PROVIDER_KEYS = {
    "twilio": (
        "kind", "account_sid", "auth_token", "from", "messaging_service_sid", "api_url",
        "timeout", "rate", "lookup_limit", *_RETRY_KEYS,
    ),
    "http": (
        "kind", "method", "url", "headers", "form", "json", "query", "success_status",
        "success_json_path", "success_value", "id_json_path", "timeout", "rate", *_RETRY_KEYS,
    ),
    "console": ("kind", "timeout", "rate", *_RETRY_KEYS),
}  # fmt: skip
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_PBX_BOUNDS = {"port": (1, 65535), "max_frame_bytes": (1024, None), "max_calls": (1, None)}
_RECIPIENTS = ("customer", "agent")


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
    top = reader.mapping(reader.document(text), _TOP_KEYS, _TOP_REQUIRED)
    phone = _phone(reader, top.get("phone"))
    providers = _providers(reader, top["providers"])
    templates = _templates(reader, top["templates"])
    name_cap = top.get("max_customer_name")
    pbx_list = _pbx_list(reader, top["pbx"])
    return Config(
        pbx=pbx_list,
        database=_database(reader, top["database"], base_dir or Path.cwd()),
        timezone=_timezone(reader, top["timezone"]),
        phone=phone,
        providers=MappingProxyType(providers),
        templates=MappingProxyType(templates),
        rules=_rules(reader, top["rules"], _Targets(templates, providers, phone)),
        agents=MappingProxyType(_agents(reader, top.get("agents"), phone)),
        max_customer_name=64 if name_cap is None else reader.integer(name_cap, 1, 1000),
        agi=_agi(reader, top.get("agi"), pbx_list),
        source=source,
    )


def _agi(reader: NodeReader, at: At | None, pbx: tuple[PbxConfig, ...]) -> AgiConfig | None:
    if at is None:
        return None
    nodes = reader.mapping(at, ("host", "port", "deadline", "pbx"), ())
    agi = reader.fill(nodes, AgiConfig, {"port": (0, 65535)})
    names = [p.name for p in pbx]
    if not agi.pbx:
        if len(names) != 1:
            raise reader.error(at, "name the pbx whose calls the AGI server tags ('pbx:')")
        return dataclasses.replace(agi, pbx=names[0])
    if agi.pbx not in names:
        raise reader.error(nodes["pbx"], f"unknown pbx '{agi.pbx}'; expected one of: "
                           + ", ".join(names))
    return agi


def _pbx_list(reader: NodeReader, at: At) -> tuple[PbxConfig, ...]:
    out: list[PbxConfig] = []
    for item in reader.sequence(at):
        nodes = reader.mapping(item, _keys(PbxConfig), ("name", "username", "secret"))
        pbx = reader.fill(nodes, PbxConfig, _PBX_BOUNDS)
        _require_text(reader, nodes, "name", pbx.name)
        _require_text(reader, nodes, "username", pbx.username)
        _require_text(reader, nodes, "secret", pbx.secret)
        if pbx.name in {seen.name for seen in out}:
            raise reader.error(nodes["name"], f"duplicate PBX name '{pbx.name}'")
        out.append(pbx)
    if not out:
        raise reader.error(at, "at least one PBX is needed")
    return tuple(out)


def _require_text(reader: NodeReader, nodes: Mapping[str, At], key: str, value: str) -> None:
    if not value.strip():
        raise reader.error(nodes[key], "must not be empty")


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
    phone = reader.fill(nodes, PhoneConfig, {"internal_max_digits": (0, 15)})
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


def _providers(reader: NodeReader, at: At) -> dict[str, ProviderConfig]:
    out = {name: _provider(reader, name, item) for name, item in reader.entries(at)}
    if not out:
        raise reader.error(at, "at least one provider is needed")
    return out


def _provider(reader: NodeReader, name: str, at: At) -> ProviderConfig:
    kind_at = dict(reader.entries(at)).get("kind")
    if kind_at is None:
        raise reader.error(At(at.node, at.child("kind"), at.line), "missing (required)")
    kind = reader.choice(kind_at, tuple(_PROVIDER_KEYS), "provider kind")
    required = {"twilio": ("account_sid", "auth_token"), "http": ("url",)}.get(kind, ())
    nodes = reader.mapping(at, _PROVIDER_KEYS[kind], required)
    retry = reader.fill(nodes, RetryPolicy, _RETRY_BOUNDS)
    gateway = _GatewayParts(reader) if kind == "http" else None
    parts = gateway.read(nodes) if gateway is not None else {}
    provider = reader.fill(nodes, ProviderConfig, name=name, kind=kind, retry=retry, **parts)
    if gateway is not None:
        _check_gateway(reader, at, nodes, provider, gateway.used)
    for key in required:
        _require_text(reader, nodes, key, getattr(provider, key))
    if kind == "twilio" and not (provider.from_.strip() or provider.messaging_service_sid.strip()):
        raise reader.error(at, "a twilio provider needs 'from' or 'messaging_service_sid'")
    if provider.api_url:
        url = urlsplit(provider.api_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise reader.error(nodes["api_url"], "must be an http:// or https:// URL")
    return provider


class _GatewayParts:
    """Reads an http provider's headers and templates; notes which variables they use."""

    def __init__(self, reader: NodeReader) -> None:
        self._reader = reader
        self._environment = sandbox()
        self.used: set[str] = set()

    def read(self, nodes: Mapping[str, At]) -> dict[str, Any]:
        reader = self._reader
        parts: dict[str, Any] = {}
        if "method" in nodes:
            parts["method"] = reader.text(nodes["method"]).upper()
        if "headers" in nodes:
            parts["headers"] = MappingProxyType(
                {_header_name(reader, item, key): _header_value(reader, item)
                 for key, item in reader.entries(nodes["headers"])}
            )
        for key in ("form", "query"):
            if key in nodes:
                entries = reader.entries(nodes[key])
                parts[key] = MappingProxyType({k: self.template(v) for k, v in entries})
        if "json" in nodes:
            reader.entries(nodes["json"])  # the body is a JSON object
            parts["json_"] = self.json(nodes["json"])
        if "success_status" in nodes:
            items = reader.items(nodes["success_status"])
            if not items:
                raise reader.error(nodes["success_status"], "the list is empty")
            parts["success_status"] = tuple(reader.integer(item, 100, 599) for item in items)
        return parts

    def json(self, at: At) -> JsonTemplate:
        node, reader = at.node, self._reader
        if isinstance(node, yaml.MappingNode):
            return MappingProxyType({k: self.json(v) for k, v in reader.entries(at)})
        if isinstance(node, yaml.SequenceNode):
            return tuple(self.json(item) for item in reader.sequence(at))
        readers = {INT: lambda: reader.integer(at, None), FLOAT: lambda: reader.number(at),
                   BOOL: lambda: reader.flag(at), NULL: lambda: None}
        return readers.get(str(node.tag), lambda: self.template(at))()

    def template(self, at: At) -> str:
        text = self._reader.text(at)
        environment: ImmutableSandboxedEnvironment = self._environment
        try:
            parsed = environment.parse(text)
            environment.from_string(parsed)
        except TemplateSyntaxError as exc:
            where = f"template line {exc.lineno}: " if exc.lineno else ""
            raise self._reader.error(at, f"{where}syntax error: {exc.message}") from exc
        except (ValueError, OverflowError, RecursionError) as exc:
            raise self._reader.error(at, f"cannot compile: {type(exc).__name__}") from exc
        names = meta.find_undeclared_variables(parsed)
        unknown = sorted(names - set(GATEWAY_VARIABLES))
        if unknown:
            raise self._reader.error(at, f"unknown variable '{unknown[0]}'; a gateway template "
                                     f"may use: {', '.join(GATEWAY_VARIABLES)}")
        self.used |= names
        return text


def _header_name(reader: NodeReader, at: At, name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise reader.error(at, f"'{name}' is not a valid HTTP header name")
    return name


def _header_value(reader: NodeReader, at: At) -> str:
    value = reader.text(at)
    if any(char in value for char in "\r\n\0"):
        raise reader.error(at, "a header value must not contain line breaks or NUL")
    return value


def _check_gateway(
    reader: NodeReader, at: At, nodes: Mapping[str, At], provider: ProviderConfig,
    used: set[str],
) -> None:
    if provider.method not in ("GET", "POST"):
        raise reader.error(nodes["method"], f"unknown method '{provider.method}'; "
                           "expected GET or POST")
    url = urlsplit(provider.url)
    if url.scheme not in ("http", "https") or not url.netloc or "{{" in provider.url:
        raise reader.error(nodes["url"], "must be an http:// or https:// URL (not a template: "
                           "per-message values go in 'query')")
    if "form" in nodes and "json" in nodes:
        raise reader.error(nodes["json"], "give 'form' or 'json', not both")
    body = nodes.get("form") or nodes.get("json")
    if provider.method == "GET" and body is not None:
        raise reader.error(body, "a GET request has no body; put the fields in 'query'")
    for path_key in ("success_json_path", "id_json_path"):
        path = getattr(provider, path_key)
        if path_key in nodes and not all(path.split(".")):
            raise reader.error(nodes[path_key], "expected a dotted path such as 'data.status'")
    if ("success_json_path" in nodes) != ("success_value" in nodes):
        raise reader.error(at, "'success_json_path' and 'success_value' go together")
    if "body" not in used:
        raise reader.error(at, "no form, json or query template uses {{ body }}: "
                           "the message text would never be sent")


def _templates(reader: NodeReader, at: At) -> dict[str, TemplateConfig]:
    environment = sandbox()
    out: dict[str, TemplateConfig] = {}
    for name, item in reader.entries(at):
        max_segments: int | None = None
        if isinstance(item.node, yaml.MappingNode):
            nodes = reader.mapping(item, ("text", "max_segments"), ("text",))
            text_at = nodes["text"]
            if "max_segments" in nodes:
                max_segments = reader.integer(nodes["max_segments"], 1, 20)
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
        out[name] = TemplateConfig(name, text, max_segments)
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
        nodes = reader.mapping(item, ("name", "when", "send"), ("name", "send"))
        name = reader.text(nodes["name"])
        _require_text(reader, nodes, "name", name)
        if name in {rule.name for rule in out}:
            raise reader.error(nodes["name"], f"duplicate rule name '{name}'")
        when = _when(reader, nodes["when"]) if "when" in nodes else RuleMatch()
        out.append(Rule(name, when, _send(reader, nodes["send"], targets)))
    return tuple(out)


def _send(reader: NodeReader, at: At, targets: _Targets) -> RuleSend:
    nodes = reader.mapping(at, ("template", "to", "via"), ("template", "to", "via"))
    template = reader.choice(nodes["template"], tuple(targets.templates), "template")
    via = reader.choice(nodes["via"], tuple(targets.providers), "provider")
    to = reader.text(nodes["to"])
    if to not in _RECIPIENTS:
        to = _number(reader, nodes["to"], targets.phone)
    return RuleSend(template=template, to=to, via=via)


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
    nodes = reader.mapping(at, ("days", "from", "to"), ("from", "to"))
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
