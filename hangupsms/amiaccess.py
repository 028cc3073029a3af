"""What a manager user lets hangupsms see, judged from the login and one test call. Pure.

Asterisk has no action that lists a user's read classes, but every event carries a
`Privilege:` header naming its class, so the events of one whole call show which classes
arrive; an absence is only evidence once a whole call was seen. Write classes come from
`ListCommands`, which lists each action the user may run with the classes that allow it.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from hangupsms.models import AmiEvent
from hangupsms.settings import Config, PbxConfig

NEEDED_READ = ("call", "cdr", "agent", "dialplan", "user")
READ_LINE = "read = " + ",".join(NEEDED_READ)
WRITE_LINE = "write = reporting"
CEL_LINES = (
    "; /etc/asterisk/cel.conf",
    "[general]",
    "enable = yes",
    "apps = queue,dial",
    "events = CHAN_START,CHAN_END,ANSWER,HANGUP,APP_START,APP_END,BRIDGE_ENTER,BRIDGE_EXIT,"
    "LINKEDID_END",
    "[manager]",
    "enabled = yes",
)
_PRIV = re.compile(r"\(Priv: ([^)]*)\)\s*$")
_TEMPLATE_VAR = re.compile(r"""vars(?:\.|\[\s*["'])(HANGUPSMS_\w+)""")
_MIN_AMI_MAJOR = 2  # Asterisk 12: Linkedid on every event, DialBegin/DialEnd, BridgeEnter


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  # works, degraded or with more access than needed
    MISSING = "MISSING"  # required: hangupsms cannot work as configured
    UNTESTED = "untested"  # nothing seen proves it either way


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report; `fix` holds the exact lines to add, `degrades` the fallback."""

    status: Status
    subject: str
    text: str
    degrades: str = ""
    fix: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Probe:
    """What the PBX answered right after login (events still off)."""

    banner: str
    settings: Mapping[str, str] | None  # CoreSettings, when the user may run it
    commands: Mapping[str, str] | None  # ListCommands: action -> "synopsis (Priv: …)"


class AccessObservation:
    """The events seen while listening, and the life of the first call that started then."""

    def __init__(self) -> None:
        self.events = 0
        self.classes: set[str] = set()
        self.names: Counter[str] = Counter()
        self.cel: set[str] = set()
        self.chanvars: set[str] = set()
        self.queue_used = False
        self.cdr_linkedid = False  # a Cdr event carried LinkedID (cdr_manager [mappings])
        self.test_call: str | None = None
        self.call_over = False
        self._live: set[str] = set()

    def feed(self, event: AmiEvent) -> None:
        if event.name.startswith("@"):
            return  # the client's own connection events
        self.events += 1
        self.names[event.name] += 1
        privilege = event.get("Privilege")
        self.classes.update(c for c in privilege.split(",") if c and c != "all")
        for key, value in event.headers.items():
            if "ChanVariable" in key:
                self._chanvar(key, value)
        if event.name == "CEL":
            self.cel.add(event.get("EventName"))
        elif event.name == "Cdr" and event.get("LinkedID"):
            self.cdr_linkedid = True
        self.queue_used = self.queue_used or _is_queue(event)
        self._follow(event)

    def _chanvar(self, key: str, value: str) -> None:
        inside = key.partition("(")[2].rstrip(")")
        for name in (inside, value.partition("=")[0]):
            if name.startswith("HANGUPSMS_"):
                self.chanvars.add(name)

    def _follow(self, event: AmiEvent) -> None:
        """Channels of the test call: created, then all gone means the call is over."""
        cel = event.get("EventName") if event.name == "CEL" else ""
        born = event.name == "Newchannel" or cel == "CHAN_START"
        gone = event.name == "Hangup" or cel == "CHAN_END"
        if not (born or gone) or self.call_over:
            return
        uniqueid, linkedid = event.get("Uniqueid"), event.get("Linkedid")
        if self.test_call is None and born and uniqueid and uniqueid == linkedid:
            self.test_call = linkedid
        if linkedid != self.test_call:
            return
        if born:
            self._live.add(uniqueid)
        elif uniqueid in self._live:
            self._live.discard(uniqueid)
            self.call_over = not self._live


def _is_queue(event: AmiEvent) -> bool:
    if event.name.startswith("QueueCaller"):
        return True
    if event.name == "CEL" and event.get("EventName") == "APP_START":
        return event.get("Application") == "Queue"
    return event.name == "Cdr" and event.get("LastApplication") == "Queue"


def needed_variables(cfg: Config) -> set[str]:
    """The HANGUPSMS_* variables that rules test or templates name."""
    names = {n for rule in cfg.rules for n in rule.when.vars if n.startswith("HANGUPSMS_")}
    for template in cfg.templates.values():
        names.update(_TEMPLATE_VAR.findall(template.text))
    return names


def manager_fix(pbx: PbxConfig, *lines: str) -> tuple[str, ...]:
    return ("; /etc/asterisk/manager.conf (FreePBX: manager_custom.conf)",
            f"[{pbx.username}]", *lines)


def login_findings(pbx: PbxConfig, probe: Probe) -> list[Finding]:
    """The login itself and the AMI version."""
    settings = probe.settings or {}
    ami = settings.get("AMIversion") or probe.banner.rpartition("/")[2]
    asterisk = settings.get("AsteriskVersion", "")
    where = f"Asterisk {asterisk}, AMI {ami}" if asterisk else f"AMI {ami} (banner)"
    major = ami.partition(".")[0]
    if not major.isdigit() or int(major) < _MIN_AMI_MAJOR:
        return [Finding(Status.MISSING, "version", f"{where}: hangupsms needs Asterisk 12 or "
                        "later (AMI 2+: Linkedid on every event, DialBegin/DialEnd)")]
    return [Finding(Status.OK, "login", f"{pbx.username} logged in to {pbx.host}:{pbx.port}; "
                    f"{where}")]


def write_findings(pbx: PbxConfig, probe: Probe) -> list[Finding]:
    """`write =`: reporting is all hangupsms needs; anything more is a risk it does not need."""
    if probe.commands is None:
        return [Finding(Status.UNTESTED, "write", "ListCommands was refused: write classes "
                        "unknown")]
    classes = {action: _classes(text) for action, text in probe.commands.items()}
    out: list[Finding] = []
    if "CoreShowChannels" in classes:
        out.append(Finding(Status.OK, "write reporting", "may run CoreShowChannels: calls that "
                           "end while the AMI link is down are found after a reconnect"))
    else:
        out.append(Finding(
            Status.WARN, "write reporting", "may not run CoreShowChannels",
            degrades=f"a call that ends while the AMI link is down is dropped after call_ttl "
            f"({pbx.call_ttl:g} s), unsent", fix=manager_fix(pbx, WRITE_LINE)))
    extra = sorted(a for a, need in classes.items() if need and "reporting" not in need)
    if extra:
        granted = sorted({c for a in extra for c in classes[a]})
        shown = ", ".join(extra[:8]) + (", …" if len(extra) > 8 else "")
        out.append(Finding(
            Status.WARN, "write extra", f"may also run {shown} (classes {', '.join(granted)}): "
            "hangupsms never does; whoever steals its secret could",
            fix=manager_fix(pbx, f"{WRITE_LINE}   ; instead of the current write line")))
    return out


def _classes(text: str) -> frozenset[str]:
    """The write classes that allow an action, from its ListCommands line; empty: anyone."""
    found = _PRIV.search(text)
    names = found[1].split(",") if found else []
    return frozenset(n.strip() for n in names if n.strip() not in ("", "all", "<none>"))


def event_findings(cfg: Config, pbx: PbxConfig, probe: Probe, seen: AccessObservation,
                   listened: float) -> list[Finding]:
    """The read classes and the CEL, CDR and variable set-up, as far as the events show."""
    if seen.events == 0:
        return [Finding(Status.UNTESTED, "events", f"no event in {listened:g} s, so nothing "
                        "shows what this user can read; start a test call (to a queue) "
                        "while doctor listens, e.g. hangupsms doctor --listen 120")]
    if "call" not in seen.classes:
        return [Finding(Status.MISSING, "read call", "events arrive but no channel events "
                        "(class call): hangupsms cannot follow calls",
                        fix=manager_fix(pbx, READ_LINE))]
    out = [Finding(Status.OK, "read call", "channel events arrive")]
    if not seen.call_over:
        out.append(Finding(Status.UNTESTED, "whole call", f"no call started and ended within "
                           f"{listened:g} s: what is missing below cannot be told yet; make a "
                           "test call while doctor listens"))
    out += [_cel(pbx, seen), _cdr(pbx, probe, seen), _agent(pbx, seen), _dialplan(pbx, seen),
            _user(seen), _variables(cfg, pbx, seen)]
    extra = seen.classes - set(NEEDED_READ)
    if extra:
        out.append(Finding(Status.WARN, "read extra", f"also receives {', '.join(sorted(extra))}"
                           " events, which hangupsms does not need",
                           fix=manager_fix(pbx, f"{READ_LINE}   ; instead of the current read "
                                           "line")))
    return out


def _cel(pbx: PbxConfig, seen: AccessObservation) -> Finding:
    if "LINKEDID_END" in seen.cel:
        return Finding(Status.OK, "CEL", "CEL events with LINKEDID_END arrive: the exact end "
                       "of each call")
    if seen.cel:
        if not seen.call_over:
            return Finding(Status.UNTESTED, "CEL", "CEL events arrive; LINKEDID_END not yet "
                           "seen")
        return Finding(Status.MISSING, "CEL", "CEL events arrive but no LINKEDID_END: a call "
                       f"with CEL never ends for hangupsms; it is dropped unsent after call_ttl "
                       f"({pbx.call_ttl:g} s)", fix=CEL_LINES)
    if not seen.call_over:
        return Finding(Status.UNTESTED, "CEL", "no CEL event yet")
    return Finding(Status.WARN, "CEL", "no CEL events",
                   degrades=f"a call ends when none of its channels is left, plus no_cel_grace "
                   f"({pbx.no_cel_grace:g} s); a Cdr arriving later than that is missed",
                   fix=CEL_LINES)


# Each Cdr event names its call too: found by it when its leg's start was missed.
CDR_MAPPINGS = ("[mappings]", "linkedid => LinkedID")


def _cdr(pbx: PbxConfig, probe: Probe, seen: AccessObservation) -> Finding:
    if "Cdr" in seen.names and seen.cdr_linkedid:
        return Finding(Status.OK, "CDR", "Cdr events arrive (talk seconds per leg)")
    if "Cdr" in seen.names:
        return Finding(Status.WARN, "CDR", "Cdr events arrive without LinkedID",
                       degrades="a Cdr whose leg's start was missed (a reconnect in mid-call) "
                       "finds no call: its talk seconds are lost",
                       fix=("; /etc/asterisk/cdr_manager.conf", *CDR_MAPPINGS))
    if not seen.call_over:
        return Finding(Status.UNTESTED, "CDR", "no Cdr event yet")
    fix = [*manager_fix(pbx, READ_LINE), "; /etc/asterisk/cdr_manager.conf", "[general]",
           "enabled = yes", *CDR_MAPPINGS]
    if (probe.settings or {}).get("CoreCDRenabled", "").lower() == "no":
        fix += ["; /etc/asterisk/cdr.conf (CDRs are off altogether)", "[general]",
                "enable = yes"]
    return Finding(Status.WARN, "CDR", "no Cdr events (class cdr, or cdr_manager is off)",
                   degrades="talk time falls back to answer→end", fix=tuple(fix))


def _agent(pbx: PbxConfig, seen: AccessObservation) -> Finding:
    if "agent" in seen.classes:
        return Finding(Status.OK, "read agent", "queue events arrive (queue and agent names)")
    if not (seen.call_over and seen.queue_used):
        return Finding(Status.UNTESTED, "read agent", "the test call went through no queue")
    return Finding(Status.WARN, "read agent", "the call went through a queue but no queue "
                   "event arrived (class agent)",
                   degrades="queue from CEL APP_START; agent from DialEnd; no agent name",
                   fix=manager_fix(pbx, READ_LINE))


def _dialplan(pbx: PbxConfig, seen: AccessObservation) -> Finding:
    if "dialplan" in seen.classes:
        return Finding(Status.OK, "read dialplan", "VarSet events arrive (Set(HANGUPSMS_…))")
    if not seen.call_over:
        return Finding(Status.UNTESTED, "read dialplan", "no VarSet event yet")
    return Finding(Status.WARN, "read dialplan", "no VarSet events (class dialplan)",
                   degrades="only the variables in channelvars (or tagged through FastAGI)",
                   fix=manager_fix(pbx, READ_LINE))


def _user(seen: AccessObservation) -> Finding:
    if "user" in seen.classes:
        return Finding(Status.OK, "read user", "UserEvent events arrive")
    return Finding(Status.UNTESTED, "read user", "no UserEvent: only a dialplan that runs "
                   "UserEvent(HangupSMS,…) sends one (class user)")


def _variables(cfg: Config, pbx: PbxConfig, seen: AccessObservation) -> Finding:
    needed = needed_variables(cfg)
    if not needed:
        return Finding(Status.OK, "channelvars", "no rule or template names a HANGUPSMS_ "
                       "variable")
    absent = sorted(needed - seen.chanvars)
    if not absent:
        carried = ", ".join(sorted(needed))
        return Finding(Status.OK, "channelvars", f"channel events carry {carried}")
    if "dialplan" in seen.classes or cfg.agi is not None:
        via = "VarSet events" if "dialplan" in seen.classes else "the FastAGI server"
        return Finding(Status.OK, "channelvars", f"{', '.join(absent)} not in channelvars; "
                       f"they come through {via}")
    line = "channelvars = " + ",".join(sorted(needed | seen.chanvars))
    return Finding(Status.WARN, "channelvars", f"channel events do not carry "
                   f"{', '.join(absent)}, which the rules or templates use",
                   degrades="those variables are never seen: rules testing them do not match",
                   fix=manager_fix(pbx, line))
