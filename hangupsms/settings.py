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
    """The `send:` of a rule: what, to whom, through which provider."""

    template: str  # a name under `templates:`
    to: str  # "customer" | "agent" | an E.164 number
    via: str  # a name under `providers:`


@dataclass(frozen=True, slots=True)
class Rule:
    """One `rules:` entry; rules are tried in order and the first match wins per recipient."""

    name: str  # unique; recorded with every message
    when: RuleMatch  # the conditions (none: every call)
    send: RuleSend  # what to send, to whom, through which provider


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
    source: str = ""
