"""`hangupsms doctor` against fake AMI servers that show what real manager users see.

Each fake replays a recorded call once doctor turns events on, then closes the connection:
doctor has seen every frame when it reports, without waiting on any clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hangupsms.amiaccess import (
    AccessObservation,
    Finding,
    Probe,
    Status,
    login_findings,
    write_findings,
)
from hangupsms.cli import EXIT_OK, EXIT_RUNTIME, main
from hangupsms.config import PbxConfig, load_config
from hangupsms.doctor import Section, check_database, diagnose, report
from hangupsms.frames import decode_frame
from hangupsms.models import AmiEvent
from hangupsms.replay import AmiReplayServer, load_transcript
from tests.lab import FIXTURES, SECRET, USER, fake_twilio, lab_config

LONG = 60.0  # neither the listen window nor the settle time ends these tests: the fake does
REPORTING = frozenset({"reporting"})


def transcript_without(tmp_path: Path, marker: bytes, name: str = "cut.ami") -> Path:
    """a.ami without the event frames holding `marker` (no .timing: replayed at once)."""
    raw = (FIXTURES / "a.ami").read_bytes()
    frames = raw.split(b"\r\n\r\n")
    kept = [f for f in frames if not (f.startswith(b"Event:") and marker in f)]
    assert len(kept) < len(frames)
    path = tmp_path / name
    path.write_bytes(b"\r\n\r\n".join(kept))
    return path


@contextlib.asynccontextmanager
async def ami(transcript: Path, write: frozenset[str] | None = REPORTING
              ) -> AsyncIterator[AmiReplayServer]:
    events = len(load_transcript(transcript))  # then close: doctor has seen them all
    server = AmiReplayServer([transcript], username=USER, secret=SECRET,
                             drop_after_frames=events, write_classes=write)
    async with server:
        yield server


async def run_doctor(tmp_path: Path, transcript: Path, write: frozenset[str] | None = REPORTING,
                     extra: dict[str, Any] | None = None,
                     **pbx: object) -> tuple[dict[str, Finding], str, bool]:
    async with ami(transcript, write) as server, fake_twilio() as twilio:
        config = load_config(lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url,
                                        pbx=dict(pbx), extra=extra))
        sections = await diagnose(config, listen=LONG, settle=LONG)
    out = io.StringIO()
    healthy = report(sections, out)
    return by_subject(sections), out.getvalue(), healthy


def by_subject(sections: list[Section]) -> dict[str, Finding]:
    return {f.subject: f for s in sections for f in s.findings}


def statuses(found: dict[str, Finding]) -> dict[str, Status]:
    return {subject: f.status for subject, f in found.items()}


def transcript_with_cdr_linkedid(tmp_path: Path) -> Path:
    """a.ami as cdr_manager sends it with `[mappings] linkedid => LinkedID` (one call)."""
    raw = (FIXTURES / "a.ami").read_bytes()
    assert raw.count(b"Event: Cdr\r\n") == 4
    path = tmp_path / "mapped.ami"
    path.write_bytes(raw.replace(b"Event: Cdr\r\n", b"Event: Cdr\r\nLinkedID: 1796413068.0\r\n"))
    return path


async def test_everything_visible_reports_every_piece_present(tmp_path: Path) -> None:
    found, text, healthy = await run_doctor(tmp_path, transcript_with_cdr_linkedid(tmp_path))
    assert healthy
    assert statuses(found) | {"connection": Status.WARN} == {
        "login": Status.OK, "write reporting": Status.OK, "read call": Status.OK,
        "CEL": Status.OK, "CDR": Status.OK, "read agent": Status.OK,
        "read dialplan": Status.OK, "read user": Status.UNTESTED, "channelvars": Status.OK,
        "read extra": Status.WARN, "connection": Status.WARN, "twilio": Status.OK,
        str(tmp_path / "h.db"): Status.OK,
    }
    assert "Asterisk 22.10.1, AMI 11.0.0" in found["login"].text
    assert "LINKEDID_END" in found["CEL"].text
    # The recording's user also read `system` (FullyBooted): more than hangupsms needs.
    assert "system" in found["read extra"].text
    assert "account 'Fake account' is active" in found["twilio"].text
    assert "ok       CEL: CEL events with LINKEDID_END arrive" in text


async def test_read_only_user_of_the_recording_degrades_queue_and_variables(
    tmp_path: Path,
) -> None:
    found, text, healthy = await run_doctor(tmp_path, FIXTURES / "a_readonly.ami",
                                            write=frozenset())
    assert healthy  # nothing required is missing: hangupsms works, degraded
    assert found["read agent"].status is Status.WARN
    assert "no agent name" in found["read agent"].degrades
    assert "read = call,cdr,agent,dialplan,user" in found["read agent"].fix
    assert "[hangupsms]" in found["read agent"].fix
    assert found["read dialplan"].status is Status.WARN
    assert "channelvars" in found["read dialplan"].degrades
    # channelvars is set in the lab, so the appointment rule's variables still arrive.
    assert found["channelvars"].status is Status.OK
    assert found["write reporting"].status is Status.WARN
    assert "write = reporting" in found["write reporting"].fix
    assert "call_ttl" in found["write reporting"].degrades
    # CoreSettings needs reporting too: the version comes from the banner.
    assert "AMI 11.0.0 (banner)" in found["login"].text
    assert {found[k].status for k in ("CEL", "read call")} == {Status.OK}
    assert found["CDR"].text == "Cdr events arrive without LinkedID"  # recorded unmapped
    assert "read extra" not in found and "write extra" not in found
    assert "warn     read agent: the call went through a queue" in text
    assert "without it: queue from CEL APP_START" in text


async def test_no_cel_says_how_calls_end_instead_and_the_cel_conf_lines(
    tmp_path: Path,
) -> None:
    found, text, healthy = await run_doctor(tmp_path, transcript_without(tmp_path, b"Event: CEL"),
                                            no_cel_grace=3)
    assert healthy
    cel = found["CEL"]
    assert cel.status is Status.WARN
    assert "no_cel_grace (3 s)" in cel.degrades
    assert cel.fix[0] == "; /etc/asterisk/cel.conf" and "[manager]" in cel.fix
    assert any(line.startswith("events = ") and "LINKEDID_END" in line for line in cel.fix)
    assert {found[k].status for k in ("read agent", "read dialplan")} == {Status.OK}
    assert "  add:\n" in text.replace("         ", "") and "enabled = yes" in text


async def test_cel_without_linkedid_end_is_missing_and_fails(tmp_path: Path) -> None:
    cut = transcript_without(tmp_path, b"EventName: LINKEDID_END")
    found, _, healthy = await run_doctor(tmp_path, cut)
    assert not healthy
    assert found["CEL"].status is Status.MISSING
    assert "never ends" in found["CEL"].text


async def test_write_classes_beyond_reporting_are_named(tmp_path: Path) -> None:
    found, _, _ = await run_doctor(tmp_path, FIXTURES / "a.ami",
                                   write=frozenset({"reporting", "originate", "command"}))
    extra = found["write extra"]
    assert extra.status is Status.WARN
    assert "Command, Originate" in extra.text and "command, originate" in extra.text
    assert "write = reporting   ; instead of the current write line" in extra.fix


async def test_a_variable_the_rules_use_but_no_channel_carries_is_flagged(
    tmp_path: Path,
) -> None:
    # The read-only recording without its ChanVariable headers: no channelvars, no VarSet.
    raw = (FIXTURES / "a_readonly.ami").read_bytes()
    lines = [line for line in raw.split(b"\r\n") if b"ChanVariable" not in line]
    bare = tmp_path / "bare.ami"
    bare.write_bytes(b"\r\n".join(lines))
    found, _, _ = await run_doctor(tmp_path, bare, write=frozenset())
    variables = found["channelvars"]
    assert variables.status is Status.WARN
    assert "HANGUPSMS_ORDER, HANGUPSMS_TEMPLATE" in variables.text
    assert "channelvars = HANGUPSMS_ORDER,HANGUPSMS_TEMPLATE" in variables.fix


async def test_an_idle_pbx_proves_nothing_about_events(tmp_path: Path) -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET) as server, \
            fake_twilio() as twilio:
        config = load_config(lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url))
        found = by_subject(await diagnose(config, listen=0.05))
    assert found["events"].status is Status.UNTESTED
    assert "--listen" in found["events"].text
    assert found["login"].status is Status.OK


async def test_wrong_secret_and_wrong_twilio_token_fail(tmp_path: Path) -> None:
    async with AmiReplayServer([], username=USER, secret="other") as server, \
            fake_twilio() as twilio:
        path = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url,
                          twilio={"auth_token": "not-the-token"})
        sections = await diagnose(load_config(path), listen=LONG)
        assert server.login_failures == 1
    found = by_subject(sections)
    assert found["login"].status is Status.MISSING
    assert "refused user hangupsms" in found["login"].text
    assert found["twilio"].status is Status.MISSING
    assert "HTTP 401 code 20003" in found["twilio"].text
    assert not report(sections, io.StringIO())


async def test_unreachable_pbx_is_missing(tmp_path: Path) -> None:
    async with AmiReplayServer([], username=USER, secret=SECRET) as server:
        port = server.port
    async with fake_twilio() as twilio:
        path = lab_config(tmp_path, ami_port=port, twilio_url=twilio.url,
                          pbx={"connect_timeout": 1})
        found = by_subject(await diagnose(load_config(path), listen=LONG))
    assert found["login"].status is Status.MISSING
    assert f"127.0.0.1:{port}" in found["login"].text


def test_database_that_cannot_be_created_or_written_is_missing(tmp_path: Path) -> None:
    assert check_database(tmp_path / "sub" / "h.db").status is Status.OK
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be", encoding="utf-8")
    cannot = check_database(blocker / "h.db")
    assert cannot.status is Status.MISSING and "cannot be created" in cannot.text
    sqlite3.connect(tmp_path / "good.db").close()
    assert check_database(tmp_path / "good.db").text == "opens for writing"
    (tmp_path / "junk.db").write_bytes(b"not a database, but long enough to be read" * 40)
    junk = check_database(tmp_path / "junk.db")
    assert junk.status is Status.MISSING and "not a database" in junk.text


async def test_doctor_command_exits_non_zero_when_something_required_is_missing(
    tmp_path: Path,
) -> None:
    cut = transcript_without(tmp_path, b"EventName: LINKEDID_END")
    async with ami(cut) as server, fake_twilio() as twilio:
        path = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url)
        out = io.StringIO()
        code = await asyncio.to_thread(main, ["doctor", "-c", str(path), "--listen", "60"],
                                       out=out)
    assert code == EXIT_RUNTIME
    assert "MISSING  CEL: CEL events arrive but no LINKEDID_END" in out.getvalue()
    assert SECRET not in out.getvalue()


async def test_doctor_command_exits_zero_when_all_is_there(tmp_path: Path) -> None:
    async with ami(FIXTURES / "a.ami") as server, fake_twilio() as twilio:
        path = lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url)
        code = await asyncio.to_thread(main, ["doctor", "-c", str(path), "--listen", "60"],
                                       out=io.StringIO())
    assert code == EXIT_OK


def events_of(path: Path) -> list[AmiEvent]:
    frames = [decode_frame(f.raw) for f in load_transcript(path)]
    return [AmiEvent("lab", f.first("Event") or "", MappingProxyType(f.as_dict()), 0.0)
            for f in frames]


def test_a_call_already_going_when_doctor_starts_is_not_the_test_call() -> None:
    events = events_of(FIXTURES / "a.ami")
    joined = AccessObservation()
    for event in events[len(events) // 3:]:
        joined.feed(event)
    assert joined.test_call is None and not joined.call_over
    assert "call" in joined.classes  # what arrived still counts as present
    whole = AccessObservation()
    over_at = None
    for index, event in enumerate(events):
        whole.feed(event)
        if whole.call_over and over_at is None:
            over_at = index
    assert whole.test_call == "1796413068.0" and over_at is not None
    # Over at the last channel's end, whichever of CEL CHAN_END or Hangup says it first (here
    # CEL; one Hangup comes even after LINKEDID_END)...
    assert events[over_at].get("EventName") == "CHAN_END"
    assert not [e for e in events[over_at + 1:] if e.name == "Newchannel"]
    # ...and LINKEDID_END comes after that: why doctor waits `settle` before judging.
    assert any(e.get("EventName") == "LINKEDID_END" for e in events[over_at + 1:])
    assert whole.queue_used and "LINKEDID_END" in whole.cel
    assert whole.chanvars == {"HANGUPSMS_ORDER", "HANGUPSMS_TEMPLATE"}


def test_an_asterisk_older_than_12_is_missing() -> None:
    pbx = PbxConfig(name="old", username="hangupsms")
    old = login_findings(pbx, Probe("Asterisk Call Manager/1.1", None, None))
    assert [f.status for f in old] == [Status.MISSING]
    assert "Asterisk 12 or later" in old[0].text
    new = login_findings(pbx, Probe("Asterisk Call Manager/9.0.0",
                                    {"AMIversion": "9.0.0", "AsteriskVersion": "20.5.0"}, None))
    assert new[0].status is Status.OK and "Asterisk 20.5.0, AMI 9.0.0" in new[0].text


def test_write_system_is_flagged_though_it_also_allows_coreshowchannels() -> None:
    pbx = PbxConfig(name="p", username="hangupsms")
    commands = {"Ping": "Keepalive command. (Priv: <none>)",
                "CoreShowChannels": "List currently active channels. (Priv: system,reporting,all)",
                "ModuleLoad": "Module management. (Priv: system,all)"}
    found = {f.subject: f for f in write_findings(pbx, Probe("", None, commands))}
    assert found["write reporting"].status is Status.OK
    assert found["write extra"].text.startswith("may also run ModuleLoad (classes system)")
