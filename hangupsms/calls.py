"""CallTracker: AMI events in, one CompletedCall per Linkedid out, exactly once. Pure: no I/O.

A call is created by the creation event of its originating channel (`Newchannel`, or CEL
`CHAN_START`, whose Uniqueid is the Linkedid); events of a Linkedid whose start was never seen
(the daemon connected mid-call) are not tracked, so no call is reported with half its facts.
It ends at CEL `LINKEDID_END` + `end_grace` (late `Cdr`/`Hangup` events still count), or, for a
call that never showed a CEL event, when its last live channel hung up + `no_cel_grace`. A call
that never ends is emitted with `EndReason.EVICTED` after `call_ttl` (or when `max_calls` is
exceeded) so the store can record it; rules skip evicted calls.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from hangupsms.callevents import (
    VARIABLE_PREFIX,
    Handler,
    HeaderLookup,
    Headers,
    chan_variable,
    on_agentconnect,
    on_app_end,
    on_app_start,
    on_cdr,
    on_cel_hangup,
    on_dialbegin,
    on_dialend,
    on_newcallerid,
    on_queueabandon,
    on_queuejoin,
    on_queueleave,
    on_transfer,
    on_userevent,
    on_varset,
)
from hangupsms.callstate import (
    CallState,
    caller_number,
    complete,
    endpoint,
    event_time,
    split_clid,
    unescape,
)
from hangupsms.config import PbxConfig
from hangupsms.models import (
    CHANNELS_EVENT,
    DISCONNECTED_EVENT,
    TAG_EVENT,
    AmiEvent,
    CdrRow,
    CompletedCall,
    EndReason,
)

log = structlog.get_logger(__name__)

FINISHED_MEMORY = 8192  # recently finalised Linkedids whose late events are ignored


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """How one PBX's calls are classified and when they are considered over (seconds)."""

    inbound_contexts: tuple[str, ...]
    internal_contexts: tuple[str, ...]
    end_grace: float = 0.2  # after CEL LINKEDID_END, wait for late Cdr/Hangup events
    no_cel_grace: float = 2.0  # without CEL: after the last live channel hung up
    call_ttl: float = 6 * 3600.0  # evict a call that never ends, with a warning
    max_calls: int = 20000  # bound on live calls; evict the oldest (warning) beyond it

    @classmethod
    def from_pbx(cls, pbx: PbxConfig) -> TrackerSettings:
        """The tracker settings of one configured PBX."""
        return cls(
            inbound_contexts=pbx.inbound_contexts,
            internal_contexts=pbx.internal_contexts,
            end_grace=pbx.end_grace,
            no_cel_grace=pbx.no_cel_grace,
            call_ttl=pbx.call_ttl,
            max_calls=pbx.max_calls,
        )


class CallTracker:
    """One PBX's AMI events in, CompletedCalls out; `now` is always the caller's monotonic clock."""

    def __init__(self, pbx: str, settings: TrackerSettings) -> None:
        """A tracker for the PBX named `pbx`."""
        self.pbx = pbx
        self.settings = settings
        self._inbound = frozenset(settings.inbound_contexts)
        self._internal = frozenset(settings.internal_contexts)
        self._calls: OrderedDict[str, CallState] = OrderedDict()  # oldest first
        self._uids: dict[str, str] = {}  # Uniqueid -> Linkedid, for Cdr events
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._heap: list[tuple[float, str]] = []  # (deadline, linkedid); stale entries skipped
        self._ttl_due = math.inf  # no call can be TTL-expired before this
        self._gap: set[str] | None = None  # calls live when the AMI connection was lost
        # Calls that lived across a gap and have finished: kept for `refine` (CDR rows).
        self._holey: OrderedDict[str, tuple[CallState, EndReason]] = OrderedDict()
        # Event name -> (header holding the Linkedid, handler); Cdr's is found by its UniqueID.
        self._routes: dict[str, tuple[str, Handler]] = {
            "Newchannel": ("Linkedid", self._on_newchannel),
            "NewCallerid": ("Linkedid", on_newcallerid),
            "Hangup": ("Linkedid", self._on_hangup),
            "DialBegin": ("Linkedid", on_dialbegin),
            "DialEnd": ("Linkedid", on_dialend),
            "BridgeEnter": ("Linkedid", self._on_bridgeenter),
            "VarSet": ("Linkedid", on_varset),
            "UserEvent": ("Linkedid", on_userevent),
            "QueueCallerJoin": ("Linkedid", on_queuejoin),
            "QueueCallerLeave": ("Linkedid", on_queueleave),
            "QueueCallerAbandon": ("Linkedid", on_queueabandon),
            "AgentConnect": ("Linkedid", on_agentconnect),
            "BlindTransfer": ("TransfereeLinkedid", on_transfer),
            "AttendedTransfer": ("TransfereeLinkedid", on_transfer),
            "Cdr": ("", on_cdr),
            "CEL": ("LinkedID", self._on_cel),
        }
        self._cel: dict[str, Handler] = {
            "CHAN_START": self._on_chan_start,
            "CHAN_END": self._on_chan_end,
            "HANGUP": on_cel_hangup,
            "APP_START": on_app_start,
            "APP_END": on_app_end,
            "LINKEDID_END": self._on_linkedid_end,
            "BLINDTRANSFER": on_transfer,
            "ATTENDEDTRANSFER": on_transfer,
        }

    # --- public API -------------------------------------------------------------------------

    def feed(self, event: AmiEvent, now: float) -> list[CompletedCall]:
        """Apply one event; returns the calls that became final by `now` (usually none)."""
        heap = self._heap
        due = (heap and heap[0][0] <= now) or now >= self._ttl_due
        done = self.expire(now) if due else []
        route = self._routes.get(event.name)
        if route is None:
            if event.name == TAG_EVENT:
                self._on_tag(event.headers)
            elif event.name[:1] == "@":
                self._connection_event(event, done)
            return done
        key, handler = route
        headers = event.headers
        linkedid = headers.get(key) if key else self._cdr_linkedid(headers)
        if not linkedid:
            return done
        call = self._calls.get(linkedid)
        if call is None:
            call = self._start(event.name, headers, linkedid, now, done)
            if call is None:
                return done
        handler(call, headers, now)
        return done

    def _cdr_linkedid(self, headers: Headers) -> str | None:
        # By its leg's Uniqueid; else by the `LinkedID` header that a cdr_manager.conf
        # `[mappings]` line `linkedid => LinkedID` adds, for a leg whose start was missed.
        return self._uids.get(headers.get("UniqueID", "")) or headers.get("LinkedID")

    def expire(self, now: float) -> list[CompletedCall]:
        """Finalise the calls whose grace has passed by `now`; evict those past the TTL."""
        done: list[CompletedCall] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, linkedid = heapq.heappop(heap)
            call = self._calls.get(linkedid)
            if call is not None and call.deadline == deadline:
                done.append(self._finish(call, self._end_reason(call)))
        if now >= self._ttl_due:
            self._sweep_ttl(now, done)
        return done

    def next_deadline(self) -> float | None:
        """The earliest `now` at which expire() would return something, None when nothing waits."""
        heap = self._heap
        while heap:
            deadline, linkedid = heap[0]
            call = self._calls.get(linkedid)
            if call is not None and call.deadline == deadline:
                break
            heapq.heappop(heap)
        candidates = [heap[0][0]] if heap else []
        if self._calls:
            candidates.append(next(iter(self._calls.values())).created + self.settings.call_ttl)
        return min(candidates) if candidates else None

    def live_calls(self) -> int:
        """How many calls are being tracked (not yet emitted)."""
        return len(self._calls)

    def reconfigure(self, settings: TrackerSettings) -> None:
        """New contexts, graces and bounds; calls in progress finish under them."""
        self.settings = settings
        self._inbound = frozenset(settings.inbound_contexts)
        self._internal = frozenset(settings.internal_contexts)

    def live_linkedids(self) -> list[str]:
        """The Linkedids of the calls being tracked, oldest first."""
        return list(self._calls)

    def wants(self, name: str, header: HeaderLookup = lambda _: None) -> bool:
        """Whether an event named `name` can change a call; `header` reads its headers.

        The one list of the events that matter: the journal keeps only these, and the
        daemon's AMI reader skips the others before decoding them. Of the VarSets, only
        those of HANGUPSMS_* variables count (Asterisk sets dozens of its own per call).
        """
        if name == "VarSet":
            return (header("Variable") or "").startswith(VARIABLE_PREFIX)
        return name in self._routes or name == TAG_EVENT

    # --- CDR fallback (see cdrsource): calls whose events were missed ----------------------

    def holey(self, linkedid: str) -> bool:
        """Whether this finished call lived across a gap (see `refine`)."""
        return linkedid in self._holey

    def refine(self, linkedid: str, rows: Sequence[CdrRow]) -> CompletedCall | None:
        """A finished call that was followed when the link dropped, completed from its CDRs.

        Events of such a call from the drop on (who answered, its Cdr events, or its end
        when it ended in the gap) may have been lost while nobody listened; its rows tell.
        None when the call is not kept (and with no rows, the call as it was finished).
        Each call is refined once.
        """
        kept = self._holey.pop(linkedid, None)
        if kept is None:
            return None
        call, reason = kept
        for row in rows:
            _apply_cdr(call, row)
        return complete(call, self.pbx, reason, self._inbound, self._internal)

    def knows(self, linkedid: str) -> bool:
        """Whether the call is being tracked, or was finished recently."""
        return linkedid in self._calls or linkedid in self._finished

    def from_cdr(self, linkedid: str, rows: Sequence[CdrRow], now: float) -> CompletedCall | None:
        """A call none of whose channel events were seen, rebuilt from its CDR rows alone.

        The row of the channel whose Uniqueid is the Linkedid stands for the call's first
        channel: its context gives the direction (FreePBX's `did` column marks an inbound
        call whose context was rewritten), its destination the DID or the dialed number, its
        caller ID the customer. Nothing when the call is known already.
        """
        if not rows or self.knows(linkedid):
            return None
        origin = next((r for r in rows if r.headers.get("UniqueID") == linkedid), rows[0])
        head = origin.headers
        starts = [r.started_at for r in rows if r.started_at is not None]
        ends = [r.ended_at for r in rows if r.ended_at is not None]
        call = CallState(linkedid, now, min(starts, default=0.0))
        self._calls[linkedid] = call
        self._register(call, linkedid, now)
        context = head.get("DestinationContext", "")
        if origin.did and self.settings.inbound_contexts:
            context = self.settings.inbound_contexts[0]
        call.set_origin(head.get("Channel", ""), context,
                        origin.did or head.get("Destination", ""))
        name, number = split_clid(head.get("CallerID", ""))
        call.origin_num = caller_number(number or head.get("Source", ""))
        call.origin_name = name
        for row in rows:
            _apply_cdr(call, row)
        call.ended_at = max(ends, default=call.started_at)
        return self._finish(call, EndReason.CDR)

    def _on_tag(self, headers: Headers) -> None:
        """The dialplan tagged a live call through the FastAGI server: merge its variables.

        The server sends the Linkedid when Asterisk answered in time; otherwise only the AGI
        channel's Uniqueid, mapped like a Cdr's.
        """
        linkedid = headers.get("Linkedid") or self._uids.get(headers.get("Uniqueid", ""), "")
        call = self._calls.get(linkedid) if linkedid else None
        if call is None:
            log.debug("calls.tag_unknown_call", pbx=self.pbx, linkedid=linkedid,
                      uniqueid=headers.get("Uniqueid", ""))
            return
        for name, value in headers.items():
            if value and name.startswith("HANGUPSMS_"):
                call.variables[name] = value

    def _connection_event(self, event: AmiEvent, done: list[CompletedCall]) -> None:
        """The AMI link dropped, or came back with the list of calls Asterisk still has.

        A call that was live at the drop and is gone after the reconnect ended in the gap:
        finalise it from what was seen (its LINKEDID_END and late events are lost). A call
        whose LINKEDID_END was seen ends normally; calls that started after the reconnect
        are not affected. Every call followed at the drop may miss events from then on: it
        is marked, and completed from its CDR rows when it finishes (`refine`).
        """
        if event.name == DISCONNECTED_EVENT:
            if self._gap is None:  # several drops in a row: the first one counts
                self._gap = set(self._calls)
            for followed in self._calls.values():
                followed.holey = True  # events from now until the reconnect are lost
            return
        if event.name != CHANNELS_EVENT or self._gap is None:
            return
        live = set(event.headers.get("Linkedids", "").split())
        for linkedid in self._gap - live:
            call = self._calls.get(linkedid)
            if call is not None and not call.linkedid_end:
                log.warning("calls.ended_in_gap", pbx=self.pbx, linkedid=linkedid)
                done.append(self._finish(call, EndReason.GAP))
        self._gap = None

    # --- lifecycle --------------------------------------------------------------------------

    def _start(
        self, name: str, headers: Headers, linkedid: str, now: float, done: list[CompletedCall]
    ) -> CallState | None:
        """A new call from its originating channel's creation event; None for anything else."""
        if name == "Newchannel":
            uniqueid = headers.get("Uniqueid")
        elif name == "CEL" and headers.get("EventName") == "CHAN_START":
            uniqueid = headers.get("UniqueID")
        else:
            return None
        if uniqueid != linkedid or linkedid in self._finished:
            return None
        ts = event_time(headers.get("Timestamp", ""), headers.get("EventTime", ""))
        call = CallState(linkedid, now, ts)
        self._calls[linkedid] = call
        if self._ttl_due == math.inf:
            self._ttl_due = now + self.settings.call_ttl
        if len(self._calls) > self.settings.max_calls:
            done.append(self._evict(next(iter(self._calls.values())), "max_calls", now))
        return call

    def _arm(self, call: CallState, deadline: float) -> None:
        call.deadline = deadline
        heapq.heappush(self._heap, (deadline, call.linkedid))

    @staticmethod
    def _end_reason(call: CallState) -> EndReason:
        return EndReason.LINKEDID_END if call.linkedid_end else EndReason.NO_CHANNELS

    def _finish(self, call: CallState, reason: EndReason) -> CompletedCall:
        linkedid = call.linkedid
        del self._calls[linkedid]
        for uniqueid in call.channels:
            if self._uids.get(uniqueid) == linkedid:
                del self._uids[uniqueid]
        self._finished[linkedid] = None
        if len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
        if call.holey:
            self._holey[linkedid] = (call, reason)
            if len(self._holey) > FINISHED_MEMORY:
                self._holey.popitem(last=False)
        return complete(call, self.pbx, reason, self._inbound, self._internal)

    def _evict(self, call: CallState, why: str, now: float) -> CompletedCall:
        if call.linkedid_end:  # it had ended and only waited for late events: a normal end
            return self._finish(call, EndReason.LINKEDID_END)
        log.warning(
            "calls.evicted",
            pbx=self.pbx,
            linkedid=call.linkedid,
            reason=why,
            age_seconds=round(now - call.created, 3),
            live_channels=call.live,
        )
        return self._finish(call, EndReason.EVICTED)

    def _sweep_ttl(self, now: float, done: list[CompletedCall]) -> None:
        ttl = self.settings.call_ttl
        while self._calls:
            oldest = next(iter(self._calls.values()))
            if oldest.created + ttl > now:
                self._ttl_due = oldest.created + ttl
                return
            done.append(self._evict(oldest, "ttl", now))
        self._ttl_due = math.inf

    def _register(self, call: CallState, uniqueid: str, now: float) -> None:
        """A channel of this call is alive; a channel moved here from another call leaves it."""
        if not uniqueid or not call.add_channel(uniqueid):
            return
        if call.deadline is not None and not call.linkedid_end:
            call.deadline = None  # a new channel: the call is not over after all
        previous = self._uids.get(uniqueid)
        self._uids[uniqueid] = call.linkedid
        if previous is not None and previous != call.linkedid:
            other = self._calls.get(previous)
            if other is not None:
                self._channel_gone(other, uniqueid, now, other.last_ts)

    def _channel_gone(self, call: CallState, uniqueid: str, now: float, ts: float) -> None:
        call.end_channel(uniqueid)
        if call.live == 0 and not call.cel_seen:
            call.ended_at = ts
            self._arm(call, now + self.settings.no_cel_grace)

    # --- channel life (these handlers also move deadlines) ----------------------------------

    def _on_newchannel(self, call: CallState, h: Headers, now: float) -> None:
        uniqueid = h.get("Uniqueid", "")
        self._register(call, uniqueid, now)
        channel = h.get("Channel", "")
        if uniqueid == call.linkedid:
            call.set_origin(channel, h.get("Context", ""), h.get("Exten", ""))
        number = caller_number(h.get("CallerIDNum", ""))
        if number and not call.origin_num and endpoint(channel) == call.origin:
            call.origin_num = number
            call.origin_name = unescape(caller_number(h.get("CallerIDName", "")))
        chan_variable(call, h)

    def _on_hangup(self, call: CallState, h: Headers, now: float) -> None:
        call.hangups += 1
        ts = event_time(h.get("Timestamp", ""))
        call.last_ts = ts
        chan_variable(call, h)
        self._channel_gone(call, h.get("Uniqueid", ""), now, ts)

    def _on_bridgeenter(self, call: CallState, h: Headers, now: float) -> None:
        self._register(call, h.get("Uniqueid", ""), now)

    # --- CEL --------------------------------------------------------------------------------

    def _on_cel(self, call: CallState, h: Headers, now: float) -> None:
        if not call.cel_seen:
            call.cel_seen = True
            if not call.linkedid_end:
                call.deadline = None  # CEL flows for this call: only LINKEDID_END ends it
        if not call.origin_num and call.origin:
            number = caller_number(h.get("CallerIDnum", ""))
            if number and endpoint(h.get("Channel", "")) == call.origin:
                call.origin_num = number  # CEL carries names raw: no unescaping
                call.origin_name = h.get("CallerIDname", "")
        handler = self._cel.get(h.get("EventName", ""))
        if handler is not None:
            handler(call, h, now)

    def _on_chan_start(self, call: CallState, h: Headers, now: float) -> None:
        uniqueid = h.get("UniqueID", "")
        self._register(call, uniqueid, now)
        if uniqueid == call.linkedid:
            call.set_origin(h.get("Channel", ""), h.get("Context", ""), h.get("Exten", ""))

    def _on_chan_end(self, call: CallState, h: Headers, now: float) -> None:
        self._channel_gone(call, h.get("UniqueID", ""), now, call.last_ts)

    def _on_linkedid_end(self, call: CallState, h: Headers, now: float) -> None:
        if call.linkedid_end:
            return
        call.linkedid_end = True
        call.ended_at = event_time(h.get("Timestamp", ""), h.get("EventTime", ""))
        call.last_ts = call.ended_at
        self._arm(call, now + self.settings.end_grace)


def _apply_cdr(call: CallState, row: CdrRow) -> None:
    """A row of the CDR database, applied as its `Cdr` event would be (a row already seen
    counts once), with the call variables it recorded where the events gave none."""
    on_cdr(call, row.headers, 0.0)
    for name, value in row.variables.items():
        call.variables.setdefault(name, value)
