"""How one AMI event updates a live call's facts: the handlers that need nothing but the call.

Each takes `(call, headers, now)` so the tracker can route every event name through one table;
handlers that touch the tracker itself (channel life, deadlines) live in calls.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hangupsms.callstate import (
    CallState,
    agent_from_channel,
    caller_number,
    dialed_number,
    endpoint,
    event_time,
    is_phone_number,
    to_int,
    unescape,
)

Headers = Mapping[str, str]
Handler = Callable[[CallState, Headers, float], None]
HeaderLookup = Callable[[str], str | None]  # one header of an event, by its exact name

VARIABLE_PREFIX = "HANGUPSMS_"  # the channel variables a call's facts take in

_PRES_RESTRICTION_MASK = 0x60  # Asterisk AST_PRES_RESTRICTION; 0x20 = prohibited
_USEREVENT_HEADERS = frozenset(
    {
        "Event", "Privilege", "Timestamp", "SystemName", "ActionID", "UserEvent", "Channel",
        "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
        "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority",
        "Uniqueid", "Linkedid", "ChanVariable",
    }
)  # the channel snapshot every UserEvent carries; the rest is what the dialplan sent


def on_newcallerid(call: CallState, h: Headers, now: float) -> None:
    """The caller ID of the originating leg (the customer inbound) and its presentation."""
    number = caller_number(h.get("CallerIDNum", ""))
    on_origin = endpoint(h.get("Channel", "")) == call.origin
    if on_origin:
        call.origin_num = number
        call.origin_name = unescape(caller_number(h.get("CallerIDName", "")))
    # A withheld caller's presentation shows on whichever leg carries their caller ID
    # after the dialplan set it (in the lab: only the agent leg).
    if (on_origin or number == call.origin_num) and _restricted(h.get("CID-CallingPres", "")):
        call.restricted = True


def on_dialbegin(call: CallState, h: Headers, now: float) -> None:
    """An outside number dialed by the originating leg (an outbound call's customer)."""
    channel = h.get("Channel")  # absent on an Originate's own dial: not the caller's
    if channel and not call.dialed and endpoint(channel) == call.origin:
        number = dialed_number(h.get("DialString", ""))
        if is_phone_number(number):
            call.dialed = number


def on_dialend(call: CallState, h: Headers, now: float) -> None:
    """The originating leg's dial: answered (by whom), busy, or given up."""
    channel = h.get("Channel")
    if not channel or endpoint(channel) != call.origin:
        return
    status = h.get("DialStatus", "")
    ts = event_time(h.get("Timestamp", ""))
    if status == "ANSWER":
        call.answer(agent_from_channel(h.get("DestChannel", "")), ts)
    elif status == "BUSY":
        call.busy = True
        call.ring_ended = ts
    else:
        call.ring_ended = ts


def on_varset(call: CallState, h: Headers, now: float) -> None:
    """A non-empty HANGUPSMS_* channel variable set by the dialplan."""
    name = h.get("Variable", "")
    value = h.get("Value", "")
    if value and name.startswith(VARIABLE_PREFIX):
        call.variables[name] = value


def on_userevent(call: CallState, h: Headers, now: float) -> None:
    """`UserEvent(HangupSMS,Key: value,...)`: every key the dialplan sent."""
    if h.get("UserEvent") != "HangupSMS":
        return
    for name, value in h.items():
        if value and name not in _USEREVENT_HEADERS and not name.startswith("ChanVariable"):
            call.variables[name] = value


def on_transfer(call: CallState, h: Headers, now: float) -> None:
    """A blind or attended transfer involved this call."""
    call.transferred = True


def on_queuejoin(call: CallState, h: Headers, now: float) -> None:
    """The caller entered a queue (read class `agent`)."""
    call.queue = h.get("Queue") or call.queue
    call.queue_joined = True
    if not call.queue_started:
        call.queue_started = event_time(h.get("Timestamp", ""))


def on_queueleave(call: CallState, h: Headers, now: float) -> None:
    """The caller left the queue (answered, abandoned or timed out)."""
    if not call.queue_left:
        call.queue_left = event_time(h.get("Timestamp", ""))


def on_queueabandon(call: CallState, h: Headers, now: float) -> None:
    """The caller hung up while waiting in the queue; HoldTime is the wait."""
    call.queue = h.get("Queue") or call.queue
    call.queue_abandoned = True
    call.hold_time = to_int(h.get("HoldTime", ""))


def on_agentconnect(call: CallState, h: Headers, now: float) -> None:
    """A queue member answered: the agent, their name and the caller's hold time."""
    call.queue = h.get("Queue") or call.queue
    agent = agent_from_channel(h.get("Interface") or h.get("DestChannel", ""))
    if call.hold_time is None:
        call.hold_time = to_int(h.get("HoldTime", ""))
    call.answer(agent, event_time(h.get("Timestamp", "")))
    member = h.get("MemberName", "")
    if agent and member:
        call.agent_names[agent] = member


def on_cdr(call: CallState, h: Headers, now: float) -> None:
    """A leg's CDR: billable seconds of the caller's answered legs, busy, queue fallback.

    The same row may come twice (as an event, then from the CDR database after a gap):
    it counts once.
    """
    key = (h.get("UniqueID", ""), h.get("DestinationChannel", ""), h.get("StartTime", ""))
    if key in call.cdr_keys:
        return
    call.cdr_keys.add(key)
    call.cdrs += 1
    if endpoint(h.get("Channel", "")) != call.origin:
        return  # the handset, agent and far-end legs' own Cdrs are not the caller's
    disposition = h.get("Disposition", "")
    destination = h.get("DestinationChannel", "")
    if disposition == "ANSWERED" and destination:
        call.talk += to_int(h.get("BillableSeconds", ""))
        call.answer(None if call.agents else agent_from_channel(destination), 0.0)
    elif disposition == "BUSY":
        call.busy = True
    if call.queue is None and h.get("LastApplication") == "Queue":
        call.queue = h.get("LastData", "").split(",", 1)[0] or None


def on_cel_hangup(call: CallState, h: Headers, now: float) -> None:
    """The originating leg hung up: its dial status (BUSY, CANCEL) from CEL Extra."""
    if endpoint(h.get("Channel", "")) != call.origin:
        return
    extra = h.get("Extra", "")  # JSON; a substring test avoids parsing every HANGUP
    if '"dialstatus":"BUSY"' in extra:
        call.busy = True
    elif '"dialstatus":"CANCEL"' in extra:
        call.cel_cancel = True


def on_app_start(call: CallState, h: Headers, now: float) -> None:
    """CEL: the caller entered Queue() (the queue without read class `agent`)."""
    if h.get("Application") != "Queue":
        return
    if call.queue is None:
        call.queue = h.get("AppData", "").split(",", 1)[0] or None
    if not call.queue_started:
        call.queue_started = event_time(h.get("Timestamp", ""), h.get("EventTime", ""))


def on_app_end(call: CallState, h: Headers, now: float) -> None:
    """CEL: the caller left Queue()."""
    if h.get("Application") == "Queue" and not call.queue_left:
        call.queue_left = event_time(h.get("Timestamp", ""), h.get("EventTime", ""))


def chan_variable(call: CallState, h: Headers) -> None:
    """Non-empty HANGUPSMS_* values of the event's channel (`ChanVariable(NAME): value`).

    frames.Frame.as_dict turns each repeated `ChanVariable: NAME=value` line into its own
    `ChanVariable(NAME)` key.
    """
    for key, value in h.items():
        if value and key.startswith("ChanVariable(HANGUPSMS_") and key.endswith(")"):
            call.variables[key[len("ChanVariable("):-1]] = value


def _restricted(presentation: str) -> bool:
    """`CID-CallingPres: 35 (Presentation Prohibited, Network Number)` -> True."""
    return to_int(presentation.split(" ", 1)[0]) & _PRES_RESTRICTION_MASK == 0x20
