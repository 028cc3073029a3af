"""What the tracker remembers about one live call, and how those facts become a CompletedCall.

Pure and small on purpose: a live call keeps a few scalars and short collections, never the
events themselves. `CallTracker` (calls.py) routes events here; `complete` reads the facts once
the call has ended.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import MappingProxyType

from hangupsms.models import CompletedCall, Direction, Disposition, EndReason

EXTENSION_MAX_DIGITS = 6  # a dialed string this short is an extension, not an outside number
_ESCAPED = re.compile(r"\\([\"\\])")
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-f]{8}$")
_NO_NUMBER = frozenset({"", "<unknown>"})
_MAX_EPOCH = 4102444800.0  # 2100-01-01; later, negative or non-finite times are junk
_CLID = re.compile(r'(?:"(.*)" ?)?<([^<>]*)>')
_MAX_DIGITS = 10  # a seconds count of more digits is junk (int() refuses 4,300+)


class CallState:
    """Mutable facts gathered from one Linkedid's events while the call is live."""

    __slots__ = (
        "agent_names",
        "agents",
        "answered",
        "answered_at",
        "busy",
        "cdr_keys",
        "cdrs",
        "cel_cancel",
        "cel_seen",
        "channels",
        "created",
        "deadline",
        "dialed",
        "ended_at",
        "hangups",
        "hold_time",
        "holey",
        "last_agent",
        "last_ts",
        "linkedid",
        "linkedid_end",
        "live",
        "origin",
        "origin_context",
        "origin_exten",
        "origin_name",
        "origin_num",
        "queue",
        "queue_abandoned",
        "queue_joined",
        "queue_left",
        "queue_started",
        "restricted",
        "ring_ended",
        "started_at",
        "talk",
        "transferred",
        "variables",
    )

    def __init__(self, linkedid: str, created: float, started_at: float) -> None:
        self.linkedid = linkedid
        self.created = created  # the tracker's monotonic clock when the call was first seen
        self.started_at = started_at  # epoch, from the first event
        self.last_ts = started_at
        self.ended_at = 0.0
        self.deadline: float | None = None  # monotonic time at which the call is final
        self.channels: dict[str, bool] = {}  # uniqueid -> still alive
        self.live = 0
        self.hangups = 0
        self.cdrs = 0
        self.holey = False  # followed when the AMI link dropped: some events may be missing
        # (UniqueID, DestinationChannel, StartTime) of the CDRs applied
        self.cdr_keys: set[tuple[str, str, str]] = set()
        self.cel_seen = False
        self.linkedid_end = False
        self.origin = ""  # endpoint of the channel whose Uniqueid is the Linkedid
        self.origin_context = ""
        self.origin_exten = ""
        self.origin_num = ""
        self.origin_name = ""
        self.restricted = False
        self.dialed = ""
        self.queue: str | None = None
        self.queue_joined = False  # a QueueCallerJoin was seen (the `agent` read class is on)
        self.queue_started = 0.0
        self.queue_left = 0.0
        self.queue_abandoned = False
        self.cel_cancel = False
        self.hold_time: int | None = None
        self.answered = False
        self.answered_at = 0.0
        self.ring_ended = 0.0
        self.busy = False
        self.agents: list[str] = []
        self.last_agent: str | None = None
        self.agent_names: dict[str, str] = {}
        self.talk = 0
        self.transferred = False
        self.variables: dict[str, str] = {}

    def add_channel(self, uniqueid: str) -> bool:
        """Record a channel as alive; False when it was already known (alive or gone)."""
        if uniqueid in self.channels:
            return False
        self.channels[uniqueid] = True
        self.live += 1
        return True

    def end_channel(self, uniqueid: str) -> None:
        """Record a channel as gone (CEL CHAN_END and Hangup both report it; count it once)."""
        alive = self.channels.get(uniqueid)
        if alive:
            self.live -= 1
        self.channels[uniqueid] = False

    def set_origin(self, channel: str, context: str, exten: str) -> None:
        """The originating channel: its endpoint, and its Context/Exten (the DID; first wins)."""
        if not self.origin:
            self.origin = endpoint(channel)
        if not self.origin_context:
            self.origin_context = context
            self.origin_exten = exten

    def answer(self, agent: str | None, ts: float) -> None:
        """A human answered; `agent` is who, when the event says so."""
        self.answered = True
        if not self.answered_at:
            self.answered_at = ts
        if agent:
            if agent not in self.agents:
                self.agents.append(agent)
            self.last_agent = agent


def endpoint(channel: str) -> str:
    """One endpoint per Local pair: `Local/x@ctx-0001;1` and `;2` are the same party."""
    # Asterisk names both halves of a Local channel alike except for the suffix, which is
    # what the LocalBridge event pairs; the name alone is enough and needs no ordering.
    if channel.startswith("Local/") and channel[-2:] in (";1", ";2"):
        return channel[:-2]
    return channel


def agent_from_channel(channel: str) -> str:
    """An agent's id from a channel or queue interface: `Local/agent1@agents-0046;1` -> agent1."""
    resource = channel.split("@", 1)[0].split("/", 1)[-1]
    if "@" not in channel:
        resource = _CHANNEL_SUFFIX.sub("", resource.split(";", 1)[0])
    return resource


def dialed_number(dial_string: str) -> str:
    """The number part of a DialString: `07700900456@pstn-out` -> 07700900456."""
    return dial_string.split("@", 1)[0].rsplit("/", 1)[-1]


def is_phone_number(text: str) -> bool:
    """An outside number rather than an extension: digits (after an optional +), long enough."""
    digits = text[1:] if text.startswith("+") else text
    return digits.isdigit() and len(digits) > EXTENSION_MAX_DIGITS


def unescape(text: str) -> str:
    """Undo the C escaping channel events apply to caller names (`\\"` and `\\\\`)."""
    return _ESCAPED.sub(r"\1", text) if "\\" in text else text


def split_clid(clid: str) -> tuple[str, str]:
    """A CDR `clid` (`"Alice" <+447700900123>`) as (name, number); quotes in the name are
    escaped (`\\"`), as Asterisk merges a caller ID."""
    match = _CLID.fullmatch(clid.strip())
    if match is None:
        return "", clid.strip()
    return unescape(match.group(1) or ""), match.group(2)


def caller_number(text: str) -> str:
    """A caller ID number as Asterisk gave it, "" for none (`<unknown>`)."""
    return "" if text in _NO_NUMBER else text


def to_int(text: str) -> int:
    """A non-negative integer header, 0 when absent or not a number."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS else 0


def event_time(timestamp: str, cel_time: str = "") -> float:
    """Epoch seconds of an event: its `Timestamp` header, else the CEL `EventTime`, else 0.0."""
    try:
        if timestamp:
            value = float(timestamp)
        elif cel_time:
            # CEL EventTime is Asterisk's local time without a zone; the lab (and most servers)
            # run in UTC. Only used when timestampevents=no.
            value = datetime.fromisoformat(cel_time).replace(tzinfo=UTC).timestamp()
        else:
            return 0.0
    except ValueError:
        return 0.0
    return value if 0.0 <= value <= _MAX_EPOCH else 0.0  # NaN fails both comparisons


def _seconds(start: float, end: float) -> int:
    """Whole seconds between two epoch times, truncated like Asterisk; 0 when either is unknown."""
    if start <= 0.0 or end <= start:
        return 0
    return int(end - start)


def _direction(state: CallState, inbound: frozenset[str], internal: frozenset[str]) -> Direction:
    context = state.origin_context
    if context in inbound:
        return Direction.INBOUND
    if context in internal:
        return Direction.OUTBOUND if _dialed(state) else Direction.INTERNAL
    return Direction.UNKNOWN


def _dialed(state: CallState) -> str:
    """The outside number an internal caller dialed: DialBegin's, else the channel's Exten."""
    if state.dialed:
        return state.dialed
    return state.origin_exten if is_phone_number(state.origin_exten) else ""


def _wait_seconds(state: CallState) -> int:
    """Start of the call (or of the queue) to the first answer; unanswered, to giving up."""
    if state.hold_time is not None:  # the queue's own count: AgentConnect / abandon HoldTime
        return state.hold_time
    start = state.queue_started or state.started_at
    if state.answered:
        return _seconds(start, state.answered_at)
    end = state.queue_left if state.queue_started else state.ring_ended
    return _seconds(start, end or state.ended_at)


def _talk_seconds(state: CallState) -> int:
    if state.cdrs:
        return state.talk
    # No CDR reached us (cdr_manager off): the bridge time is the best we have.
    return _seconds(state.answered_at, state.ended_at) if state.answered else 0


def complete(
    state: CallState,
    pbx: str,
    reason: EndReason,
    inbound: frozenset[str],
    internal: frozenset[str],
) -> CompletedCall:
    """The final facts of an ended call."""
    direction = _direction(state, inbound, internal)
    if direction is Direction.OUTBOUND:
        customer_number, customer_name = _dialed(state), ""
        agent_id: str | None = state.origin_num or None
        agent_name = state.origin_name or None
        agents: tuple[str, ...] = (agent_id,) if agent_id else ()
    else:  # an internal call has no outside party to text
        internal_call = direction is Direction.INTERNAL
        customer_number = "" if internal_call else state.origin_num
        customer_name = "" if internal_call else state.origin_name
        agent_id = state.last_agent
        agent_name = state.agent_names.get(agent_id) if agent_id else None
        agents = tuple(state.agents)
    if state.answered:
        disposition = Disposition.ANSWERED
    elif state.busy:
        disposition = Disposition.BUSY
    else:
        disposition = Disposition.NO_ANSWER
    # Without the `agent` read class there is no QueueCallerAbandon: a queue call that was
    # never answered and whose caller leg's dial ended CANCEL (CEL HANGUP dialstatus) gave up.
    abandoned = state.queue_abandoned or (
        not state.queue_joined and state.queue is not None and state.cel_cancel
    )
    return CompletedCall(
        pbx=pbx,
        linkedid=state.linkedid,
        direction=direction,
        customer_number=customer_number,
        customer_name=customer_name,
        presentation_restricted=state.restricted and bool(customer_number),
        did=(state.origin_exten or None) if direction is Direction.INBOUND else None,
        queue=state.queue,
        answered=state.answered,
        disposition=disposition,
        queue_abandoned=abandoned and not state.answered,
        agent_id=agent_id,
        agent_name=agent_name,
        agents_involved=agents,
        talk_seconds=_talk_seconds(state),
        wait_seconds=_wait_seconds(state),
        variables=MappingProxyType(dict(state.variables)),
        transferred=state.transferred or len(agents) > 1,
        started_at=state.started_at,
        ended_at=state.ended_at or state.last_ts,
        end_reason=reason,
        linkedid_end_seen=state.linkedid_end,
        hangup_events=state.hangups,
        cdr_events=state.cdrs,
    )
