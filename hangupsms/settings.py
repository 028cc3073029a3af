"""The configuration as frozen objects: what `config.parse_config` builds from the YAML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeAlias

from hangupsms.retry import RetryPolicy

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
    status_callback: str = ""  # twilio: set from web.public_url; "" asks for no receipts
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
class RetentionConfig:
    """`retention:`: records older than `days` are deleted every `every_hours` (off if absent)."""

    days: int = 365
    every_hours: float = 6.0


STOP_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
                 "退订", "T", "TD", "R")
START_KEYWORDS = ("START", "UNSTOP")
HELP_KEYWORDS = ("HELP",)


@dataclass(frozen=True, slots=True)
class WebConfig:
    """`web:`: the HTTP server for Twilio callbacks, replies, tracked links (off if absent).

    `public_url` is where the reverse proxy publishes it: Twilio signs the URL it calls,
    so signatures are checked against this base, and tracked links are built on it.
    """

    public_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    stop_keywords: tuple[str, ...] = STOP_KEYWORDS
    start_keywords: tuple[str, ...] = START_KEYWORDS
    help_keywords: tuple[str, ...] = HELP_KEYWORDS
    help_text: str = "Reply STOP to stop these messages."
    survey_rules: tuple[str, ...] = ()  # rules whose message asks for a 1-5 rating
    survey_window: float = 86400.0  # seconds after the survey was sent a digit counts


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
    retention: RetentionConfig | None = None
    web: WebConfig | None = None
    source: str = ""
