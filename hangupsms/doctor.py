"""`hangupsms doctor`: what the configured AMI user, CDR database, providers, database and web
listener allow, in plain words.

It logs in with events off, asks `CoreSettings` and `ListCommands`, then turns events on and
listens until a call that started meanwhile is over (plus `settle` seconds for its
LINKEDID_END and late Cdr events), or `listen` seconds have passed. It sends no message and
makes no call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from hangupsms.ami import AmiConnection, AmiError, ConnState
from hangupsms.amiaccess import (
    AccessObservation,
    Finding,
    Probe,
    Status,
    event_findings,
    login_findings,
    write_findings,
)
from hangupsms.doctor_cdr import check_cdr
from hangupsms.doctor_web import check_web
from hangupsms.models import DISCONNECTED_EVENT, AmiEvent
from hangupsms.settings import Config, PbxConfig, ProviderConfig

SETTLE = 3.0  # seconds after the test call's last channel: its LINKEDID_END and late Cdrs
_LABEL_WIDTH = 9


@dataclass(frozen=True, slots=True)
class Section:
    """The findings about one thing: a PBX, the providers, the database."""

    title: str
    findings: tuple[Finding, ...]


async def diagnose(cfg: Config, *, listen: float, settle: float = SETTLE) -> list[Section]:
    """Every check, each PBX listened to at the same time."""
    pbx_findings = await asyncio.gather(
        *(check_pbx(cfg, pbx, listen=listen, settle=settle) for pbx in cfg.pbx))
    sections = []
    for pbx, found in zip(cfg.pbx, pbx_findings, strict=True):
        if pbx.cdr is not None:
            found.append(await check_cdr(pbx.cdr, cfg.timezone))
        sections.append(Section(f"pbx {pbx.name} ({pbx.host}:{pbx.port})", tuple(found)))
    sections.append(Section("providers", tuple(await check_providers(cfg.providers))))
    if cfg.web is not None:
        sections.append(Section("web", tuple(await check_web(cfg.web))))
    sections.append(Section("database", (await asyncio.to_thread(check_database, cfg.database),)))
    return sections


def report(sections: list[Section], out: TextIO) -> bool:
    """Print the findings; True when nothing required is missing."""
    for section in sections:
        print(section.title, file=out)
        for finding in section.findings:
            label = str(finding.status).ljust(_LABEL_WIDTH)
            print(f"  {label}{finding.subject}: {finding.text}", file=out)
            indent = " " * (2 + _LABEL_WIDTH)
            if finding.degrades:
                print(f"{indent}without it: {finding.degrades}", file=out)
            if finding.fix:
                print(f"{indent}add:", file=out)
                for line in finding.fix:
                    print(f"{indent}  {line}", file=out)
    return not any(f.status is Status.MISSING for s in sections for f in s.findings)


class _Listener:
    """The AMI sink: feeds the observation, notes a lost link, wakes the waiting loop."""

    def __init__(self) -> None:
        self.seen = AccessObservation()
        self.lost = False
        self.changed = asyncio.Event()

    def __call__(self, event: AmiEvent) -> None:
        if event.name == DISCONNECTED_EVENT:
            self.lost = True
        self.seen.feed(event)
        self.changed.set()

    async def until_done(self, listen: float, settle: float) -> float:
        """Wait for the end of the test call (+ settle), a lost link or `listen` s; time spent."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        over_at: float | None = None
        while not self.lost:
            now = loop.time()
            if self.seen.call_over and over_at is None:
                over_at = now
            end = start + listen if over_at is None else min(start + listen, over_at + settle)
            if now >= end:
                break
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), end - now)
        return loop.time() - start


async def check_pbx(cfg: Config, pbx: PbxConfig, *, listen: float,
                    settle: float = SETTLE) -> list[Finding]:
    """Log in as the configured user, probe, listen; what it can and cannot see."""
    listener = _Listener()
    connection = AmiConnection(pbx, listener, events=False)
    runner = asyncio.create_task(connection.run(), name=f"doctor-{pbx.name}")
    try:
        failure = await _login(connection, pbx)
        if failure is not None:
            return [failure]
        probe = Probe(connection.banner or "", await _answer(connection, "CoreSettings"),
                      await _answer(connection, "ListCommands"))
        found = [*login_findings(pbx, probe), *write_findings(pbx, probe)]
        events_on = await _answer(connection, "Events", EventMask="on")
        if events_on is None:
            found.append(Finding(Status.MISSING, "events", "the PBX refused to send events"))
            return found
        listened = await listener.until_done(listen, settle)
        found += event_findings(cfg, pbx, probe, listener.seen, listened)
        if listener.lost:
            found.append(Finding(Status.WARN, "connection", f"the PBX closed the connection "
                                 f"after {listened:.1f} s of listening"))
        return found
    finally:
        await connection.close()
        await runner


async def _login(connection: AmiConnection, pbx: PbxConfig) -> Finding | None:
    """None once logged in; else why not, in words (the log has the technical reason)."""
    where = f"{pbx.host}:{pbx.port}"
    try:
        async with asyncio.timeout(2 * pbx.connect_timeout + 1):
            while connection.state is not ConnState.READY:
                if connection.state is ConnState.AUTH_FAILED:
                    return Finding(Status.MISSING, "login", f"{where} refused user "
                                   f"{pbx.username}: wrong secret, or this host is not in "
                                   "the user's permit= lines")
                if connection.stats.reconnects:
                    break
                await connection.wait_state(*(s for s in ConnState if s is not connection.state))
            else:
                return None
    except TimeoutError:
        pass
    return Finding(Status.MISSING, "login", f"no AMI session with {where}: is Asterisk "
                   "running, manager.conf [general] enabled = yes, and port and bindaddr "
                   "right?")


async def _answer(connection: AmiConnection, action: str,
                  **headers: str) -> Mapping[str, str] | None:
    """The headers of a successful answer, or None (refused, or no answer)."""
    try:
        response = await connection.send_action({"Action": action, **headers},
                                                timeout=connection.pbx.connect_timeout)
    except AmiError:
        return None
    if str(response.get("Response", "")).lower() != "success":
        return None
    return {k: v for k, v in response.items() if k not in ("Response", "ActionID", "Message")}


async def check_providers(providers: Mapping[str, ProviderConfig]) -> list[Finding]:
    """Each provider's credentials, checked without sending a message where possible."""
    out: list[Finding] = []
    for name, cfg in providers.items():
        if cfg.kind == "twilio":
            from hangupsms.providers.twilio import TwilioProvider

            provider = TwilioProvider(cfg)
            try:
                works, detail = await provider.check_account()
            finally:
                await provider.close()
            out.append(Finding(Status.OK if works else Status.MISSING, name, detail))
        elif cfg.kind == "http":
            out.append(Finding(Status.UNTESTED, name, "a gateway offers no standard way to "
                               "check credentials without sending; send yourself a test "
                               "message"))
        else:
            out.append(Finding(Status.OK, name, f"{cfg.kind}: prints messages, nothing to check"))
    return out


def check_database(path: Path) -> Finding:
    """Whether the database can be opened for writing (or created) by the user running this."""
    if path.exists():
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=1.0)) as db:
                db.execute("BEGIN IMMEDIATE")  # takes the write lock without writing
                db.rollback()
        except sqlite3.Error as exc:
            return Finding(Status.MISSING, str(path), f"cannot write: {exc}")
        problem = _unwritable(path.parent)
        if problem:
            return Finding(Status.MISSING, str(path), f"its folder is not writable ({problem}): "
                           "SQLite keeps its journal (-wal, -shm) there")
        return Finding(Status.OK, str(path), "opens for writing")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    problem = _unwritable(folder)
    if problem:
        return Finding(Status.MISSING, str(path), f"does not exist and cannot be created in "
                       f"{folder} ({problem})")
    return Finding(Status.OK, str(path), "does not exist yet; it will be created at the first "
                   "start")


def _unwritable(folder: Path) -> str:
    """Why a file cannot be created in `folder` ("" when it can), tried for real."""
    try:
        descriptor, name = tempfile.mkstemp(prefix=".hangupsms-doctor-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(descriptor)
    os.unlink(name)
    return ""
