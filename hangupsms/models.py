"""The values that flow between the pipeline's stages: frozen and slotted."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """One AMI `Event:` frame as received: header names keep the case Asterisk sent."""

    pbx: str
    name: str
    headers: Mapping[str, str]
    received_at: float  # the receiver's monotonic clock

    def get(self, key: str, default: str = "") -> str:
        """Header value by name; exact case first, then case-insensitive (CEL says `LinkedID`)."""
        value = self.headers.get(key)
        if value is not None:
            return value
        folded = key.lower()
        for name, value in self.headers.items():
            if name.lower() == folded:
                return value
        return default


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"
    UNKNOWN = "unknown"


class Disposition(enum.StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"


class EndReason(enum.StrEnum):
    LINKEDID_END = "linkedid_end"  # CEL said so
    NO_CHANNELS = "no_channels"  # no CEL: last channel hung up and the grace passed
    EVICTED = "evicted"  # never ended within the TTL
    GAP = "ended_while_disconnected"  # Asterisk no longer had it after an AMI reconnect
    CDR = "from_cdr"  # its events were missed: rebuilt from the PBX's CDR rows alone


# Events hangupsms itself puts into the stream, in order with Asterisk's events. The `@`
# prefix cannot clash (Asterisk event names are alphanumeric) and cannot be forged: the AMI
# client drops `@` names from the wire.
DISCONNECTED_EVENT = "@Disconnected"  # the connection was lost; events may be missing
CHANNELS_EVENT = "@Channels"  # after a reconnect: header `Linkedids`, the calls still live
# From the FastAGI server: `Linkedid` (when Asterisk told it), `Uniqueid` and `Channel` of
# the AGI channel, and the HANGUPSMS_* variables the dialplan asked for.
TAG_EVENT = "@Tag"


@dataclass(frozen=True, slots=True)
class CompletedCall:
    """One call (all channels sharing a Linkedid) after it ended: the facts rules act on."""

    pbx: str
    linkedid: str
    direction: Direction
    customer_number: str  # as Asterisk gave it; "" when unknown
    customer_name: str  # unescaped; "" when unknown
    presentation_restricted: bool
    did: str | None
    queue: str | None
    answered: bool
    disposition: Disposition
    queue_abandoned: bool
    agent_id: str | None
    agent_name: str | None
    agents_involved: tuple[str, ...]
    talk_seconds: int
    wait_seconds: int
    variables: Mapping[str, str]
    transferred: bool
    started_at: float  # epoch seconds (Asterisk's event Timestamp when present)
    ended_at: float  # epoch seconds
    end_reason: EndReason
    linkedid_end_seen: bool
    hangup_events: int = 0
    cdr_events: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.pbx, self.linkedid)


class Encoding(enum.StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class TrackedLink:
    """A `link()` in a message: `<public_url>/r/<token>` redirects to `url` and counts a click."""

    token: str
    url: str
    tag: str  # the customer tag a click gives ("" means the URL's host)


@dataclass(frozen=True, slots=True)
class CouponSlot:
    """A `coupon()` in a message: `marker` in the text becomes the next unused code of `pool`."""

    marker: str
    pool: str


@dataclass(frozen=True, slots=True)
class RenderedText:
    """A message body with its SMS encoding and segment count.

    `links` and `coupons` are bound to the message when it is stored, in the same
    transaction; until then the text holds each coupon's marker, not a code.
    """

    text: str
    encoding: Encoding
    segments: int
    links: tuple[TrackedLink, ...] = ()
    coupons: tuple[CouponSlot, ...] = ()


class MessageState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    SKIPPED = "skipped"
    # Held by the fraud guard (until `hangupsms guard release`), or because a coupon pool
    # was empty (until `coupons load`: never sent without its code); the reason says which.
    HELD = "held"
    DEFERRED = "deferred"
    FAILED = "failed"
    DEAD = "dead"
    UNKNOWN = "unknown"
    CHECKING = "checking"  # an `unknown` message whose provider lookup is in flight
    CANCELLED = "cancelled"  # what it was about changed before it went out (reason says what)
    EXPIRED = "expired"  # not sendable before its rule's `expires_after`


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """What one matched rule wants sent to one recipient, before it is stored.

    `to` is E.164 when the recipient is textable; `skip_reason` is set when it is not
    (the message is then recorded as skipped and never sent).
    """

    rule: str
    recipient: str  # "customer", "agent", "notify" or the configured fixed number
    to: str  # E.164, or the raw value when it could not be read
    provider: str
    template: str
    body: RenderedText | None
    skip_reason: str | None = None
    fallbacks: tuple[str, ...] = ()  # the rule's other providers, in order (failover)
    category: str = "service"
    priority: int = 0
    region: str | None = None  # the recipient number's region
    send_at: float | None = None  # None: due at once; else deferred until then
    wait_reason: str | None = None  # why it was deferred
    expires_at: float | None = None
    cost: float = 0.0  # segments x the configured price for the region
    cancel_if_answered: bool = False


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A stored message the sender hands to a provider."""

    id: int
    to: str
    body: str
    provider: str
    call_pbx: str
    call_linkedid: str
    rule: str
    attempts: int = 0
    created_at: float | None = None  # epoch seconds the message was stored (max age)
    fallbacks: tuple[str, ...] = ()  # providers still to try after `provider`, in order
    attempts_before: int = 0  # of `attempts`, those made through earlier providers

    @property
    def provider_attempts(self) -> int:
        """Sends through the current provider: what its retry budget counts."""
        return self.attempts - self.attempts_before


class SendStatus(enum.StrEnum):
    ACCEPTED = "accepted"  # the provider took it
    REJECTED = "rejected"  # the message or its recipient (invalid number, opted out): never retry
    # The provider will not send for us (credentials, account, sender, its region permission):
    # never retried with it, but the rule's next provider may send it.
    REFUSED = "refused"
    THROTTLED = "throttled"  # retry after `retry_after`
    TRANSIENT = "transient"  # did not reach the provider: safe to retry
    AMBIGUOUS = "ambiguous"  # may have reached the provider: look up before any resend


@dataclass(frozen=True, slots=True)
class SendResult:
    status: SendStatus
    provider_id: str | None = None
    error_code: str | None = None
    detail: str = ""
    retry_after: float | None = None
    extra: Mapping[str, str] = field(default_factory=lambda: EMPTY)


class LookupStatus(enum.StrEnum):
    FOUND = "found"  # the provider holds the message: it was accepted
    NOT_FOUND = "not_found"  # the provider's records prove it was not accepted
    UNAVAILABLE = "unavailable"  # could not tell (error, ambiguous records): ask again later


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What a provider's records say about a message whose send was ambiguous."""

    status: LookupStatus
    provider_id: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One CDR row of the PBX's CDR database (see `cdrsource`)."""

    rowid: int
    linkedid: str
    headers: Mapping[str, str]  # named as in a `Cdr` AMI event
    did: str  # FreePBX's `did` column; "" when the table has none
    variables: Mapping[str, str]  # call variable -> value, from the configured columns
    started_at: float | None
    ended_at: float | None
