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
class CdrConfig:
    """`pbx[].cdr:`, the PBX's CDR database, read when AMI events were missed.

    Calls that ended while hangupsms was not connected (a restart, a crash, a network cut)
    are finished from their CDR rows: the legs' answer, agent, billable seconds and queue.
    `sqlite` is a `cdr_sqlite3_custom` file whose `table` has the columns uniqueid,
    linkedid, channel, dstchannel, disposition, billsec, src, dst, dcontext, clid, lastapp,
    lastdata, and optionally start, end and did (FreePBX's names); `variables` maps call
    variables (HANGUPSMS_TEMPLATE …) to the columns that record them. CDR times are read in
    `timezone` (default: the configuration's). `poll_interval`: how often a call that was
    live across the gap, but whose start was missed, is looked for again.
    """

    sqlite: Path  # the cdr_sqlite3_custom database file (read-only; relative: next to this file)
    table: str = "cdr"  # its table
    # call variable (HANGUPSMS_ORDER) -> the column that records it
    variables: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    timezone: str = ""  # of the CDR times
    poll_interval: float = 5.0  # seconds between looks for calls up since before a reconnect


@dataclass(frozen=True, slots=True)
class PbxConfig:
    """One `pbx:` entry: an Asterisk Manager Interface login and how its calls are read."""

    name: str  # how logs, the database and `agi.pbx` / `providers.*.pbx` name this PBX
    host: str = "127.0.0.1"  # the AMI address (manager.conf `bindaddr`)
    port: int = 5038  # the AMI port (manager.conf `port`)
    username: str = ""  # the manager.conf user section
    secret: str = field(default="", repr=False)  # its secret; write ${VAR}, not the value
    # a call whose first channel starts in one of these contexts is inbound
    inbound_contexts: tuple[str, ...] = ("from-pstn", "from-trunk", "from-did-direct")
    internal_contexts: tuple[str, ...] = ("from-internal",)  # internal and outbound dialling
    connect_timeout: float = 5.0  # seconds for the TCP connection and the login
    ping_interval: float = 10.0  # seconds between Pings
    ping_timeout: float = 5.0  # a Ping unanswered this long means the peer is dead
    reconnect_min: float = 0.1  # first retry delay
    reconnect_max: float = 30.0  # cap for the backoff
    login_failure_delay: float = 60.0  # slow lane after an authentication failure
    max_frame_bytes: int = 65536  # a bigger AMI frame drops the connection (it is garbage)
    end_grace: float = 0.2  # after LINKEDID_END, wait this long for late Cdr/Hangup events
    no_cel_grace: float = 2.0  # without CEL: after the last channel hung up
    call_ttl: float = 6 * 3600.0  # a call that never ends is evicted after this
    max_calls: int = 20000  # live calls tracked per PBX; the oldest is evicted beyond it
    cdr: CdrConfig | None = None  # off when absent: calls ended in a gap use what was seen


@dataclass(frozen=True, slots=True)
class PhoneConfig:
    """`phone:`: how numbers are read and which may be texted."""

    default_region: str = "US"  # ISO 3166 code for national numbers such as 07700 900123
    allowed_regions: tuple[str, ...] = ()  # empty: any region
    number_check: str = "valid"  # "valid" (an assigned range) | "possible" (plausible length)
    mobile_only: bool = False  # text mobile numbers only (landlines cannot receive)
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
    kind: str  # "twilio" | "http" | "ami-gsm" | "console"
    account_sid: str = ""  # twilio: the account (AC…)
    auth_token: str = field(default="", repr=False)  # twilio: write ${VAR}, not the value
    # the YAML key is `from`
    from_: str = ""  # twilio: the sender number (or give messaging_service_sid)
    messaging_service_sid: str = ""  # twilio: a Messaging Service (MG…) instead of `from`
    api_url: str = ""  # Twilio-compatible endpoint; "" means Twilio itself
    timeout: float = 10.0  # seconds to wait for the provider's answer to one message
    rate: float = 1.0  # messages per second
    lookup_limit: int = 100  # twilio: messages listed when checking an ambiguous send
    status_callback: str = ""  # twilio: set from web.public_url; "" asks for no receipts
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # keys of the same names
    method: str = "POST"  # http: GET or POST
    # http: the URL, headers and templates often carry an API key, so repr leaves them out.
    url: str = field(default="", repr=False)  # http: the gateway's http(s) URL
    # http: request headers (not templates)
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)
    form: Mapping[str, str] | None = field(default=None, repr=False)  # http: field -> template
    # http: the JSON body, nested; its string leaves are templates (the YAML key is `json`)
    json_: Mapping[str, JsonTemplate] | None = field(default=None, repr=False)
    # http: URL query parameters -> template (the only place a GET puts the message)
    query: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)
    success_status: tuple[int, ...] = ()  # http: empty means any 2xx
    success_json_path: str = ""  # http: a dotted path into the JSON answer
    success_value: str | None = None  # http: what is at success_json_path on success
    id_json_path: str = ""  # http: a dotted path to the gateway's message id
    pbx: str = ""  # ami-gsm: the configured PBX whose AMI connection carries the action
    module: str = "dongle"  # ami-gsm: "dongle" (chan_dongle) or "quectel" (chan_quectel)
    device: str = ""  # ami-gsm: the modem's name in dongle.conf / quectel.conf
    validity: int | None = None  # ami-gsm: minutes the network keeps trying (dongle only)
    report: bool = False  # ami-gsm: ask the network for a delivery report (dongle only)


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    """One `templates:` entry: a Jinja2 text, optionally with a size limit."""

    name: str
    text: str  # Jinja2 over the call's template variables
    max_segments: int | None = None  # a longer rendering is skipped (reason: too long)
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

    direction: str | None = None  # of the call, from its first channel's context
    did: tuple[str, ...] | None = None  # the number the customer dialled (inbound)
    queue: tuple[str, ...] | None = None  # the queue the call went through
    agent: tuple[str, ...] | None = None  # the agent id who spoke last with the customer
    answered: bool | None = None  # by a human (a queue's own Answer() does not count)
    disposition: tuple[str, ...] | None = None  # how the call ended
    min_talk_seconds: int | None = None  # inclusive
    max_talk_seconds: int | None = None  # inclusive
    customer_number: str | None = None  # a regular expression, searched in the raw and E.164 forms
    vars: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # variable -> exact value
    time: tuple[TimeWindow, ...] | None = None  # weekly windows the call's end must fall in


@dataclass(frozen=True, slots=True)
class RuleSend:
    """The `send:` of a rule. `delay` (YAML `delay` or `after`, e.g. `30s`, `7d`) postpones
    the message after the call; `at` ("HH:MM", recipient time) then moves it to the next such
    time; a message not sent `expires_after` after it was first due is dropped; a
    `cancel_if_answered` message still waiting is cancelled when a later call with the same
    customer is answered (default: when the rule is for unanswered calls). `caps` limit this
    rule's messages per recipient (`[{max: 1, per: 7d}]`: one survey a week): over a cap,
    a message waits for a free slot, or expires (give `expires_after` to drop it instead).
    """

    template: str  # a name under `templates:`
    # "customer" | "agent" | "notify" (the numbers the dialplan gave in HANGUPSMS_NOTIFY,
    # comma-separated, at most 3) | an E.164 number
    to: str
    # Names under `providers:`, in order: the first sends; a later one only when those
    # before it refused the message, spent their retry budget or are not configured.
    via: tuple[str, ...]
    delay: float = 0.0  # seconds
    at: int | None = None  # minutes after midnight, recipient time
    expires_after: float | None = None  # seconds
    cancel_if_answered: bool = False
    caps: tuple[Cap, ...] = ()  # per recipient, for this rule's messages


@dataclass(frozen=True, slots=True)
class Rule:
    name: str  # unique; recorded with every message
    when: RuleMatch  # the conditions (none: every call)
    send: RuleSend  # what to send, to whom, through which provider
    priority: int = 0  # the higher wins when a recipient's contact budget is short


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One `agents:` entry, keyed by the agent id Asterisk reports (`agent_id`)."""

    id: str
    name: str = ""  # `agent_name` in templates when Asterisk gives none
    mobile: str = ""  # where `to: agent` texts


@dataclass(frozen=True, slots=True)
class AgiConfig:
    """The FastAGI server the dialplan tags live calls through (`agi:`; off when absent)."""

    host: str = "127.0.0.1"  # the address to listen on (the dialplan's agi://host:port)
    port: int = 4573  # 0 picks a free port
    deadline: float = 0.5  # seconds a dialplan AGI() call may wait on us at most
    pbx: str = ""  # whose calls it tags; may be left out when there is one PBX


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """`retention:`: records older than `days` are deleted every `every_hours` (off if absent)."""

    days: int = 365  # calls (and their messages) that ended longer ago are deleted
    every_hours: float = 6.0  # messages still waiting keep their call


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

    public_url: str  # the https URL the reverse proxy publishes this server at
    host: str = "127.0.0.1"  # the address to listen on (the proxy's side)
    port: int = 8080  # the port to listen on (0: any free one)
    # replies that add the sender to the suppression list (whole message, any case)
    stop_keywords: tuple[str, ...] = STOP_KEYWORDS
    start_keywords: tuple[str, ...] = START_KEYWORDS  # replies that lift the suppression
    help_keywords: tuple[str, ...] = HELP_KEYWORDS  # replies answered with help_text
    help_text: str = "Reply STOP to stop these messages."  # the answer to a help keyword
    survey_rules: tuple[str, ...] = ()  # rules whose message asks for a 1-5 rating
    survey_window: float = 86400.0  # seconds after the survey was sent a digit counts


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
    daily: int = 10000  # messages per day, all destinations
    hourly_cost: float | None = None  # in the currency of `prices`
    daily_cost: float | None = None  # in the currency of `prices`


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The `policy:` section: categories, the per-recipient budget, the guard, prices."""

    categories: Mapping[str, CategoryPolicy]
    budget: tuple[Cap, ...] = ()
    guard: GuardConfig = field(default_factory=GuardConfig)  # the fraud guard
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
    """The whole file."""

    pbx: tuple[PbxConfig, ...]  # one entry per Asterisk, each with its own AMI login
    database: Path  # the SQLite file; a relative path is next to the configuration file
    timezone: str  # an IANA name (Europe/London): template times and `time` windows
    phone: PhoneConfig  # how numbers are read and which may be texted
    providers: Mapping[str, ProviderConfig]  # by name, as `send.via` names them
    templates: Mapping[str, TemplateConfig]  # by name, as `send.template` names them
    rules: tuple[Rule, ...]  # in order; the first match wins for each recipient
    agents: Mapping[str, AgentConfig] = field(default_factory=dict)  # by agent id
    max_customer_name: int = 64  # caller-controlled text is cut to this many characters
    agi: AgiConfig | None = None  # the FastAGI server; off when absent
    retention: RetentionConfig | None = None  # deleting old records; off when absent
    policy: PolicyConfig = field(default_factory=lambda: default_policy())  # see `policy:`
    web: WebConfig | None = None  # the HTTP server for Twilio and tracked links; off when absent
    source: str = ""
