"""The `providers:` section of the configuration: twilio, http gateways, GSM modems, console."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml
from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hangupsms.render import sandbox
from hangupsms.retry import RetryPolicy
from hangupsms.settings import GATEWAY_VARIABLES, JsonTemplate, ProviderConfig
from hangupsms.yamlnodes import BOOL, FLOAT, INT, NULL, At, NodeReader

# RetryPolicy fields a provider entry may set (batch and idle_poll are the sender's own).
RETRY_KEYS = (
    "max_attempts", "max_age", "base_delay", "max_delay", "throttle_delay", "lookup_settle",
    "lookup_delay", "max_lookups", "clock_skew",
)  # fmt: skip
RETRY_BOUNDS = {"max_attempts": (1, None), "max_lookups": (1, None)}
PROVIDER_KEYS = {
    "twilio": (
        "kind", "account_sid", "auth_token", "from", "messaging_service_sid", "api_url",
        "timeout", "rate", "lookup_limit", *RETRY_KEYS,
    ),
    "http": (
        "kind", "method", "url", "headers", "form", "json", "query", "success_status",
        "success_json_path", "success_value", "id_json_path", "timeout", "rate", *RETRY_KEYS,
    ),
    "ami-gsm": (
        "kind", "pbx", "module", "device", "validity", "report", "timeout", "rate",
        *RETRY_KEYS,
    ),
    "console": ("kind", "timeout", "rate", *RETRY_KEYS),
}  # fmt: skip
PROVIDER_REQUIRED = {"twilio": ("account_sid", "auth_token"), "http": ("url",),
                     "ami-gsm": ("device",)}
GSM_MODULES = ("dongle", "quectel")
# The longest relative validity an SMS-SUBMIT can ask for (TP-VP 255: 63 weeks), in minutes.
MAX_VALIDITY = 63 * 7 * 24 * 60
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


def require_text(reader: NodeReader, nodes: Mapping[str, At], key: str, value: str) -> None:
    if not value.strip():
        raise reader.error(nodes[key], "must not be empty")


def read_providers(
    reader: NodeReader, at: At, pbx: Collection[str]
) -> dict[str, ProviderConfig]:
    """Every entry of `providers:`; `pbx` names the configured PBXs an ami-gsm entry may use."""
    out = {name: _provider(reader, name, item, pbx) for name, item in reader.entries(at)}
    if not out:
        raise reader.error(at, "at least one provider is needed")
    return out


def _provider(reader: NodeReader, name: str, at: At, pbx: Collection[str]) -> ProviderConfig:
    kind_at = dict(reader.entries(at)).get("kind")
    if kind_at is None:
        raise reader.error(At(at.node, at.child("kind"), at.line), "missing (required)")
    kind = reader.choice(kind_at, tuple(PROVIDER_KEYS), "provider kind")
    required = PROVIDER_REQUIRED.get(kind, ())
    nodes = reader.mapping(at, PROVIDER_KEYS[kind], required)
    retry = reader.fill(nodes, RetryPolicy, RETRY_BOUNDS)
    if kind == "ami-gsm":
        return _gsm(reader, at, nodes, name, retry, pbx)
    gateway = _GatewayParts(reader) if kind == "http" else None
    parts = gateway.read(nodes) if gateway is not None else {}
    provider = reader.fill(nodes, ProviderConfig, name=name, kind=kind, retry=retry, **parts)
    if gateway is not None:
        _check_gateway(reader, at, nodes, provider, gateway.used)
    for key in required:
        require_text(reader, nodes, key, getattr(provider, key))
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


def _gsm(
    reader: NodeReader, at: At, nodes: Mapping[str, At], name: str, retry: RetryPolicy,
    pbx: Collection[str],
) -> ProviderConfig:
    """An `ami-gsm` entry: which PBX's AMI connection, which channel driver, which modem."""
    bounds = {"validity": (1, MAX_VALIDITY)}
    provider = reader.fill(nodes, ProviderConfig, bounds, name=name, kind="ami-gsm", retry=retry)
    require_text(reader, nodes, "device", provider.device)
    if "module" in nodes:
        reader.choice(nodes["module"], GSM_MODULES, "module")
    if provider.module != "dongle":
        for key in ("validity", "report"):
            if key in nodes:
                raise reader.error(nodes[key], f"only chan_dongle takes '{key}' "
                                   "(module: dongle)")
    if "pbx" not in nodes:
        if len(pbx) != 1:
            raise reader.error(at, "name the pbx whose modem sends ('pbx:')")
        return dataclasses.replace(provider, pbx=next(iter(pbx)))
    if provider.pbx not in pbx:
        raise reader.error(nodes["pbx"], f"unknown pbx '{provider.pbx}'; expected one of: "
                           + ", ".join(pbx))
    return provider
