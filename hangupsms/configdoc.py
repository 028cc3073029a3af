"""The accepted YAML, section by section: read from the frozen objects of `settings`.

Each section's keys come from a dataclass's fields (name, type, default and the comment
beside the field), or, for `providers:`, from the keys the parser takes per `kind`. Where
the parser takes another shape than the field's type (a template as a string or a mapping,
one value or a list, `time` windows, `from` for `from_`), a `Shape` given here says what
it accepts. `reference` turns the sections into the Markdown reference and the JSON Schema.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from types import NoneType, UnionType
from typing import Any

from hangupsms.config import (
    AGI_BOUNDS,
    CDR_REQUIRED,
    MAX_CUSTOMER_NAME,
    MAX_SEGMENTS,
    PBX_BOUNDS,
    PBX_REQUIRED,
    PHONE_BOUNDS,
    RETENTION_BOUNDS,
    RETENTION_REQUIRED,
    RULE_REQUIRED,
    SEND_REQUIRED,
    TEMPLATE_REQUIRED,
    TOP_REQUIRED,
    WINDOW_REQUIRED,
)
from hangupsms.config_policy import GUARD_BOUNDS
from hangupsms.config_providers import (
    GSM_MODULES,
    MAX_VALIDITY,
    PROVIDER_KEYS,
    PROVIDER_REQUIRED,
    RETRY_BOUNDS,
    RETRY_KEYS,
)
from hangupsms.config_web import WEB_BOUNDS, WEB_REQUIRED
from hangupsms.models import Direction, Disposition
from hangupsms.retry import RetryPolicy
from hangupsms.settings import (
    CATEGORIES,
    AgentConfig,
    AgiConfig,
    Cap,
    CategoryPolicy,
    CdrConfig,
    Config,
    GuardConfig,
    PbxConfig,
    PhoneConfig,
    PolicyConfig,
    ProviderConfig,
    RetentionConfig,
    Rule,
    RuleMatch,
    RuleSend,
    TemplateConfig,
    WebConfig,
)

Schema = dict[str, Any]
ENV = {"$ref": "#/$defs/env"}  # a `${VAR}` reference, typed once it is replaced
TEXT: Schema = {"$ref": "#/$defs/text"}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Shape:
    """What a value may be: its JSON Schema and how the reference names it."""

    schema: Schema
    label: str


@dataclass(frozen=True, slots=True)
class Key:
    name: str  # as written in YAML
    shape: Shape
    default: str  # as shown; "" when the key is required
    doc: str


@dataclass(frozen=True, slots=True)
class Section:
    """One mapping of the file (`pbx[]`, `providers.<name>` of one kind, …)."""

    anchor: str  # the `$defs` name and the Markdown anchor
    path: str  # where it sits in the file
    doc: str
    keys: tuple[Key, ...]
    required: tuple[str, ...]


def integer(low: int | None = 0, high: int | None = None) -> Shape:
    bounds = {k: v for k, v in (("minimum", low), ("maximum", high)) if v is not None}
    label = "integer" + (f" ≥ {low}" if low is not None else "") + (
        f" ≤ {high}" if high is not None else "")
    return Shape({"anyOf": [{"type": "integer", **bounds}, ENV]}, label)


NUMBER = Shape({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, ENV]}, "number > 0")
BOOLEAN = Shape({"anyOf": [{"type": "boolean"}, ENV]}, "boolean")
STRING = Shape(TEXT, "string")


def choice(*values: str) -> Shape:
    return Shape({"enum": list(values)}, " \\| ".join(f"`{v}`" for v in values))


def one_or_list(item: Shape, *, min_items: int = 0) -> Shape:
    listed: Schema = {"type": "array", "items": item.schema}
    if min_items:
        listed["minItems"] = min_items
    return Shape({"anyOf": [item.schema, listed]}, f"{item.label} or a list of them")


def mapping_of(item: Shape, what: str = "name") -> Shape:
    return Shape({"type": "object", "additionalProperties": item.schema},
                 f"mapping {what} → {item.label}")


def section_ref(anchor: str, label: str) -> Shape:
    return Shape({"$ref": f"#/$defs/{anchor}"}, f"[{label}](#{anchor})")


@cache
def field_notes(cls: type) -> Mapping[str, str]:
    """The comment beside each field of dataclass `cls` (or the comment lines just above)."""
    source = inspect.getsource(sys.modules[cls.__module__])
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    notes: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.ClassDef) and node.name == cls.__name__):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                notes[item.target.id] = _note(item, comments, lines)
    return notes


def _note(item: ast.AnnAssign, comments: Mapping[int, str], lines: list[str]) -> str:
    end = item.end_lineno or item.lineno
    if end in comments:
        return comments[end]
    above: list[str] = []
    line = item.lineno - 1
    while line in comments and lines[line - 1].lstrip().startswith("#"):
        above.insert(0, comments[line])
        line -= 1
    return " ".join(above)


def _shape_of(hint: object, bounds: tuple[int | None, int | None]) -> Shape:
    if isinstance(hint, UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not NoneType]
        hint = args[0] if len(args) == 1 else hint
    shapes = {bool: BOOLEAN, float: NUMBER, str: STRING,
              tuple[str, ...]: one_or_list(STRING)}
    if hint is int:
        return integer(*bounds)
    if hint in shapes:
        return shapes[hint]
    raise TypeError(f"no YAML shape for {hint!r}: give one in the section's overrides")


def shown(value: object) -> str:
    """A default as YAML would write it; "—" for none."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "—" if not value else str(dict(value))
    return str(value)


def keys_of(
    cls: type, *, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None,
    bounds: Mapping[str, tuple[int | None, int | None]] | None = None,
    overrides: Mapping[str, Shape] | None = None, defaults: Mapping[str, str] | None = None,
    docs: Mapping[str, str] | None = None, extra: tuple[type, ...] = (),
) -> tuple[Key, ...]:
    """The YAML keys of dataclass `cls` (and of `extra` ones), in field order or `only`'s."""
    found: dict[str, Key] = {}
    for owner in (cls, *extra):
        hints = typing.get_type_hints(owner)
        notes = field_notes(owner)
        for spec in dataclasses.fields(owner):
            name = spec.name.rstrip("_")
            if name in skip or name in found or (only is not None and name not in only):
                continue
            shape = (overrides or {}).get(name) or _shape_of(
                hints[spec.name], (bounds or {}).get(spec.name, (0, None)))
            value = shown(_default(spec))
            default = (defaults or {}).get(name) or (value if value == "—" else f"`{value}`")
            doc = (docs or {}).get(name) or notes.get(spec.name, "")
            found[name] = Key(name, shape, default, doc)
    order = only if only is not None else tuple(found)
    return tuple(found[name] for name in order if name in found)


def _default(spec: dataclasses.Field[Any]) -> object:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def docstring(cls: type) -> str:
    """The first paragraph of `cls`'s docstring, on one line."""
    text = inspect.getdoc(cls) or ""
    return " ".join(text.split("\n\n")[0].split())


def window_keys() -> tuple[Key, ...]:
    """A `time` window: its YAML keys are not `TimeWindow`'s fields (minutes, day numbers)."""
    day_names = [*WEEKDAYS, "monday", "tuesday", "wednesday", "thursday", "friday",
                 "saturday", "sunday"]
    # Any case, without an inline flag: JSON Schema patterns are ECMA-262 regular expressions.
    pattern = "|".join("".join(f"[{c.upper()}{c}]" for c in name) for name in day_names)
    day = Shape({"type": "string", "pattern": f"^({pattern})$"},
                "day (`mon` … `sun`, or in full, any case)")
    clock = {"type": ["string", "integer"], "pattern": r"^\s*\d{1,2}:\d{2}\s*$"}
    doc = "a 24-hour clock; quote it"
    return (
        Key("days", one_or_list(day, min_items=1), "every day",
            "the days the window opens on"),
        Key("from", Shape(clock, '"HH:MM"'), "", f"the window opens ({doc})"),
        Key("to", Shape(clock, '"HH:MM"'), "",
            'the window closes (exclusive; "24:00" is midnight); earlier than `from`: the '
            "next day"),
    )


def provider_keys(kind: str) -> tuple[Key, ...]:
    """The keys a `kind` of provider takes, documented from ProviderConfig and RetryPolicy."""
    template = mapping_of(STRING, "field")
    overrides: dict[str, Shape] = {
        "kind": Shape({"const": kind}, f"`{kind}`"),
        "method": choice("GET", "POST"),
        "headers": mapping_of(STRING, "header"),
        "form": template, "query": template,
        "json": Shape({"type": "object"}, "mapping (nested; string leaves are templates)"),
        "success_status": one_or_list(integer(100, 599), min_items=1),
        "module": choice(*GSM_MODULES),
        "validity": integer(1, MAX_VALIDITY),
    }
    docs = {"kind": "the kind of provider", "pbx": "the configured PBX whose AMI connection "
            "carries the action; may be left out when there is one PBX"}
    bounds = dict(RETRY_BOUNDS)
    keys = keys_of(ProviderConfig, only=PROVIDER_KEYS[kind], overrides=overrides,
                   bounds=bounds, docs=docs, extra=(RetryPolicy,),
                   defaults={"pbx": "the only PBX"})
    prefixes = ("twilio: ", "http: ", "ami-gsm: ")
    return tuple(dataclasses.replace(key, doc=_unprefixed(key.doc, prefixes)) for key in keys)


def _unprefixed(doc: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if doc.startswith(prefix):
            return doc[len(prefix):]
    return doc


RETRY_NOTE = ("The retry keys (" + ", ".join(f"`{k}`" for k in RETRY_KEYS)
              + ") apply to this provider's messages only.")
KIND_DOCS = {
    "twilio": "Twilio's Messages API, or a Twilio-compatible endpoint (`api_url`).",
    "http": "A generic HTTP SMS gateway: one request per message. At most one of `form` and "
            "`json` (a GET takes neither); some `{{ body }}` must reach the gateway. String "
            "values of `form`, `json` and `query` are Jinja2 templates over `to`, `body`, "
            "`message_id` and `rule`; numbers, booleans and nulls in `json` are sent as "
            "written. Paths are dotted, a list index a number (`messages.0.id`).",
    "ami-gsm": "The PBX's own GSM modem: `DongleSendSMS` (chan_dongle) or `QuectelSendSMS` "
               "(chan_quectel) on the AMI connection to `pbx`; the manager user needs "
               "`write = call`. Line breaks are sent as spaces.",
    "console": "Prints each message instead of sending it (tests, dry runs).",
}


def sections() -> tuple[Section, ...]:
    """Every mapping of the file, the top level first."""
    region = Shape({"type": "string", "pattern": "^[A-Za-z]{2}$"}, "region code")
    phone = keys_of(PhoneConfig, bounds=PHONE_BOUNDS, overrides={
        "default_region": region, "allowed_regions": one_or_list(region),
        "number_check": choice("valid", "possible")})
    send_to = Shape({"anyOf": [{"enum": ["customer", "agent", "notify"]}, TEXT]},
                    "`customer` \\| `agent` \\| `notify` \\| a number")
    return (
        Section("top", "", docstring(Config), _top_keys(), TOP_REQUIRED),
        Section("pbx", "pbx[]", docstring(PbxConfig), keys_of(
            PbxConfig, bounds=PBX_BOUNDS, overrides={"cdr": section_ref("cdr", "cdr")},
            defaults={"cdr": "off"}), PBX_REQUIRED),
        Section("cdr", "pbx[].cdr", docstring(CdrConfig), keys_of(CdrConfig, overrides={
            "sqlite": STRING, "table": STRING, "timezone": STRING,
            "variables": mapping_of(STRING, "variable")},
            defaults={"timezone": "the configuration's"}), CDR_REQUIRED),
        Section("phone", "phone", docstring(PhoneConfig), phone, ()),
        *(Section(f"provider-{kind}", f"providers.<name> (kind: {kind})",
                  f"{KIND_DOCS[kind]} {RETRY_NOTE}", provider_keys(kind),
                  ("kind", *PROVIDER_REQUIRED.get(kind, ())))
          for kind in PROVIDER_KEYS),
        Section("template", "templates.<name>", docstring(TemplateConfig) + " A template is "
                "that text as a string, or a mapping:",
                keys_of(TemplateConfig, skip=("name",), bounds={"max_segments": MAX_SEGMENTS},
                        overrides={"category": choice(*CATEGORIES)}),
                TEMPLATE_REQUIRED),
        Section("rule", "rules[]", docstring(Rule), keys_of(Rule, overrides={
            "name": STRING, "when": section_ref("when", "when"),
            "send": section_ref("send", "send"), "priority": integer(None)},
            defaults={"when": "every call"}), RULE_REQUIRED),
        Section("when", "rules[].when", _when_doc(), _when_keys(), ()),
        Section("window", "rules[].when.time", "One weekly window; `time` takes one or a list "
                "(any may match), read in `timezone` at the call's end.", window_keys(),
                WINDOW_REQUIRED),
        Section("send", "rules[].send", docstring(RuleSend), _send_keys(send_to),
                SEND_REQUIRED),
        Section("agent", "agents.<id>", docstring(AgentConfig),
                keys_of(AgentConfig, skip=("id",)), ()),
        Section("agi", "agi", docstring(AgiConfig), keys_of(
            AgiConfig, bounds=AGI_BOUNDS, defaults={"pbx": "the only PBX"}), ()),
        Section("retention", "retention", docstring(RetentionConfig), keys_of(
            RetentionConfig, bounds=RETENTION_BOUNDS), RETENTION_REQUIRED),
        Section("web", "web", docstring(WebConfig), keys_of(WebConfig, bounds=WEB_BOUNDS),
                WEB_REQUIRED),
        *_policy_sections(),
    )


DURATION = Shape({"anyOf": [{"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhdwSMHDW]?\s*$"},
                            {"type": "number", "minimum": 0}, ENV]},
                 "duration (`90`, `30s`, `5m`, `2h`, `7d`, `1w`)")
CLOCK = Shape({"type": ["string", "integer"], "pattern": r"^\s*\d{1,2}:\d{2}\s*$"},
              '"HH:MM"')


def _send_keys(send_to: Shape) -> tuple[Key, ...]:
    via = Shape({"anyOf": [TEXT, {"type": "array", "items": TEXT, "minItems": 1,
                                  "uniqueItems": True}]},
                "provider name or a list of them (failover order)")
    keys = keys_of(RuleSend, overrides={
        "to": send_to, "via": via, "delay": DURATION, "at": CLOCK, "expires_after": DURATION,
        "caps": one_or_list(section_ref("cap", "cap"))},
        defaults={"delay": "none", "at": "—", "expires_after": "never", "caps": "none",
                  "cancel_if_answered": "`true` for rules on unanswered calls to the customer"},
        docs={"to": "who gets it: `customer` (the external party), `agent` (its `mobile` "
                    "under `agents:`), `notify` (the numbers the dialplan gave in "
                    "HANGUPSMS_NOTIFY, e.g. FastAGI `notify?to=…`, comma-separated, at most 3; "
                    "none or not textable: recorded as skipped with the reason) or a fixed "
                    "number",
              "via": "the first sends; the next takes over only when the one before it "
                     "refused the message for its own reason (credentials, account, sender "
                     "number, region permission), spent its retry budget on throttling or "
                     "transient errors, or is not configured. Never after a rejection for "
                     "the recipient (opted out, invalid number) nor after an ambiguous send "
                     "its lookup has not proved absent (README: Failover)",
              "delay": "wait this long after the call (`after` is the same key)",
              "at": "then move to the next such time, recipient time",
              "expires_after": "drop a message not sent this long after it was first due",
              "cancel_if_answered": "cancel it while waiting when a later call with the same "
                                    "customer is answered",
              "caps": "per recipient, for this rule: over one, wait for a slot or expire"})
    after = Key("after", DURATION, "none", "the same as `delay` (give one of them)")
    return (*keys, after)


def _policy_sections() -> tuple[Section, ...]:
    region_map = "region (`US`), US state (`US-FL`) or `default`"
    cap = section_ref("cap", "cap")
    return (
        Section("policy", "policy", docstring(PolicyConfig), keys_of(PolicyConfig, overrides={
            "categories": Shape({"type": "object", "propertyNames": {"enum": list(CATEGORIES)},
                                 "additionalProperties": {"$ref": "#/$defs/category"}},
                                "mapping `service` \\| `marketing` → [category](#category)"),
            "budget": one_or_list(cap), "guard": section_ref("guard", "guard"),
            "prices": mapping_of(Shape({"anyOf": [{"type": "number", "minimum": 0}, ENV]},
                                       "number ≥ 0"), "region or `default`"),
        }, defaults={"categories": "marketing: 08:00–21:00 (stricter US states), footer required",
                     "guard": "the defaults below"},
            docs={"categories": "per message category", "budget": "per recipient, across every "
                  "rule; rule priorities decide who wins"}), ()),
        Section("category", "policy.categories.<service|marketing>", docstring(CategoryPolicy),
                keys_of(CategoryPolicy, skip=("name",), overrides={
                    "windows": mapping_of(one_or_list(section_ref("window", "window")),
                                          region_map),
                    "footers": mapping_of(STRING, "region or `default`"),
                    "caps": one_or_list(cap)},
                    docs={"windows": "when this category may be sent, per region",
                          "footers": "appended to every message of this category, per region",
                          "caps": "per recipient, for this category"}), ()),
        Section("cap", "policy…caps[], policy.budget, rules[].send.caps", docstring(Cap),
                keys_of(Cap, overrides={"max": integer(0), "per": DURATION},
                        docs={"max": "messages at most", "per": "in any period this long"}),
                ("max", "per")),
        Section("guard", "policy.guard", docstring(GuardConfig),
                keys_of(GuardConfig, bounds=GUARD_BOUNDS), ()),
    )


def _top_keys() -> tuple[Key, ...]:
    template = Shape({"anyOf": [TEXT, {"$ref": "#/$defs/template"}]},
                     "string, or [mapping](#template)")
    return keys_of(Config, skip=("source",), overrides={
        "pbx": Shape({"type": "array", "items": {"$ref": "#/$defs/pbx"}, "minItems": 1},
                     "list of [pbx](#pbx)"),
        "database": STRING, "timezone": STRING,
        "phone": section_ref("phone", "phone"),
        "providers": Shape({"type": "object", "minProperties": 1,
                            "additionalProperties": {"$ref": "#/$defs/provider"}},
                           "mapping name → [provider](#providers)"),
        "templates": Shape({"type": "object", "additionalProperties": template.schema},
                           f"mapping name → {template.label}"),
        "rules": Shape({"type": "array", "items": {"$ref": "#/$defs/rule"}},
                       "list of [rule](#rule)"),
        "agents": mapping_of(section_ref("agent", "agent"), "agent id"),
        "max_customer_name": integer(*MAX_CUSTOMER_NAME),
        "agi": section_ref("agi", "agi"), "retention": section_ref("retention", "retention"),
        "policy": section_ref("policy", "policy"), "web": section_ref("web", "web"),
    }, defaults={"phone": "all defaults", "agi": "off", "retention": "off",
                 "policy": "the defaults below", "web": "off"})


def _when_keys() -> tuple[Key, ...]:
    lists = {name: one_or_list(STRING, min_items=1) for name in ("did", "queue", "agent")}
    return keys_of(RuleMatch, overrides={
        **lists, "direction": choice(*Direction),
        "disposition": one_or_list(choice(*Disposition), min_items=1),
        "customer_number": STRING, "vars": mapping_of(STRING, "variable"),
        "time": one_or_list(section_ref("window", "window"), min_items=1),
    })


def _when_doc() -> str:
    """RuleMatch's docstring without its YAML paragraph (the table says it per key)."""
    return docstring(RuleMatch) + " A string or list of strings matches when any item does."
