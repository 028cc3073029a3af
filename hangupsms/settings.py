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
    category: str = "service"  # "service" | "marketing": which policy category applies


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
    """The `send:` of a rule. `delay` (YAML `delay` or `after`, e.g. `30s`, `7d`) postpones
    the message after the call; `at` ("HH:MM", recipient time) then moves it to the next such
    time; a message not sent `expires_after` after it was first due is dropped; a
    `cancel_if_answered` message still waiting is cancelled when a later call with the same
    customer is answered (default: when the rule is for unanswered calls).
    """

    template: str
    to: str  # "customer" | "agent" | an E.164 number
    via: str  # a provider name
    delay: float = 0.0  # seconds
    at: int | None = None  # minutes after midnight, recipient time
    expires_after: float | None = None  # seconds
    cancel_if_answered: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: RuleMatch
    send: RuleSend
    priority: int = 0  # the higher wins when a recipient's contact budget is short


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


@dataclass(frozen=True, slots=True)
class Cap:
    """At most `max` messages to one recipient in any `per` seconds."""

    max: int
    per: float


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    """What applies to one message category (`policy.categories.<name>`).

    `windows` and `footers` are keyed by region (ISO 3166, the recipient number's), a US
    state (`US-FL`, from the area code) or "default"; the most specific key applies. A
    category without windows may send at any time.
    """

    name: str
    windows: Mapping[str, tuple[TimeWindow, ...]] = field(default_factory=dict)
    footers: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    caps: tuple[Cap, ...] = ()


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """The fraud guard (`policy.guard`): tripped, it holds every send for a human."""

    prefix_digits: int = 6  # digits after "+" that make a destination prefix
    per_prefix_hour: int = 30  # messages per prefix per hour
    hourly: int = 1000  # messages per hour, all destinations
    daily: int = 10000
    hourly_cost: float | None = None  # in the currency of `prices`
    daily_cost: float | None = None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The `policy:` section: categories, the per-recipient budget, the guard, prices."""

    categories: Mapping[str, CategoryPolicy]
    budget: tuple[Cap, ...] = ()
    guard: GuardConfig = field(default_factory=GuardConfig)
    prices: Mapping[str, float] = field(default_factory=dict)  # per segment; region or default
    recipient_timezone: bool = True  # read windows in the zone the number tells, if it does


DAY, WEEK = 86_400.0, 7 * 86_400.0
_EVERY_DAY = frozenset(range(7))
_DAYTIME = (TimeWindow(_EVERY_DAY, 8 * 60, 21 * 60),)
_UNTIL_EIGHT = (TimeWindow(_EVERY_DAY, 8 * 60, 20 * 60),)
# US TCPA: 08:00-21:00 recipient time; China: no marketing at night. Other regions get the
# same conservative default. Stricter US states (by the number's area code): Florida (FTSA,
# Fla. Stat. 501.059), Oklahoma (OTSA), Maryland (Stop the Spam Calls Act) and Washington
# (RCW 80.36.390) 08:00-20:00; Texas (Bus. & Com. Code 301.051) 09:00-21:00, Sundays from
# noon. Each is overridable in `policy.categories.marketing.windows`; laws change.
DEFAULT_MARKETING_WINDOWS: Mapping[str, tuple[TimeWindow, ...]] = MappingProxyType({
    "default": _DAYTIME, "US": _DAYTIME, "CN": _DAYTIME,
    "US-FL": _UNTIL_EIGHT, "US-OK": _UNTIL_EIGHT, "US-MD": _UNTIL_EIGHT,
    "US-WA": _UNTIL_EIGHT,
    "US-TX": (TimeWindow(frozenset(range(6)), 9 * 60, 21 * 60),
              TimeWindow(frozenset({6}), 12 * 60, 21 * 60)),
})
DEFAULT_MARKETING_CAPS = (Cap(1, DAY), Cap(3, WEEK))
CATEGORIES = ("service", "marketing")


def default_policy() -> PolicyConfig:
    """The policy when the configuration has no `policy:` section."""
    return PolicyConfig(categories=MappingProxyType({
        "service": CategoryPolicy("service"),
        "marketing": CategoryPolicy("marketing", DEFAULT_MARKETING_WINDOWS,
                                    caps=DEFAULT_MARKETING_CAPS),
    }))


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
    policy: PolicyConfig = field(default_factory=lambda: default_policy())
    source: str = ""
