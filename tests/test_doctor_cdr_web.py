"""`hangupsms doctor` on a PBX's CDR database, cdr_manager's LinkedID and the web listener."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from hangupsms.amiaccess import Status
from hangupsms.cdrlab import CdrWriter, lab_variable_columns
from hangupsms.doctor_cdr import check_cdr, sqlite_custom_lines
from hangupsms.doctor_web import check_listener, check_public_url
from hangupsms.settings import CdrConfig, WebConfig
from tests.lab import FIXTURES
from tests.test_doctor import run_doctor, transcript_without
from tests.webrig import web_rig

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
MAPPINGS = ("[mappings]", "linkedid => LinkedID")


async def test_cdr_events_without_linkedid_ask_for_the_mappings_line(tmp_path: Path) -> None:
    found, text, healthy = await run_doctor(tmp_path, FIXTURES / "a.ami")  # recorded unmapped
    assert healthy
    cdr = found["CDR"]
    assert cdr.status is Status.WARN
    assert "reconnect" in cdr.degrades
    assert cdr.fix == ("; /etc/asterisk/cdr_manager.conf", *MAPPINGS)
    assert "warn     CDR: Cdr events arrive without LinkedID" in text


async def test_no_cdr_events_fix_turns_cdr_manager_on_with_its_mappings(tmp_path: Path) -> None:
    found, _, _ = await run_doctor(tmp_path, transcript_without(tmp_path, b"Event: Cdr"))
    fix = found["CDR"].fix
    assert found["CDR"].text.startswith("no Cdr events")
    start = fix.index("; /etc/asterisk/cdr_manager.conf")
    assert fix[start:start + 5] == ("; /etc/asterisk/cdr_manager.conf", "[general]",
                                    "enabled = yes", *MAPPINGS)
    # The same lines the README and the FreePBX guide give.
    assert "[mappings]          ; each Cdr names its call" in README


async def test_a_readable_cdr_database_is_ok_in_its_pbx_section(tmp_path: Path) -> None:
    master = tmp_path / "master.db"
    CdrWriter(master)  # the table as the README configures it, still empty
    found, text, healthy = await run_doctor(
        tmp_path, FIXTURES / "a.ami",
        cdr={"sqlite": str(master), "variables": lab_variable_columns()})
    assert healthy
    assert found["cdr"].status is Status.OK
    assert f"{master}: table 'cdr' has every column hangupsms reads (0 rows so far)" in text


def cdr_config(path: Path) -> CdrConfig:
    return CdrConfig(sqlite=path, variables=lab_variable_columns())


async def test_missing_cdr_columns_are_named_with_the_conf_lines_of_the_readme(
    tmp_path: Path,
) -> None:
    master = tmp_path / "master.db"
    with contextlib.closing(sqlite3.connect(master)) as db:  # before linkedid and variables
        db.execute("CREATE TABLE cdr (start, end, clid, src, dst, dcontext, channel,"
                   " dstchannel, lastapp, lastdata, duration, billsec, disposition, uniqueid,"
                   " hangupsms_template)")
    found = await check_cdr(cdr_config(master), "Europe/London")
    assert found.status is Status.MISSING
    assert found.text == f"{master}: table 'cdr' has no column linkedid, hangupsms_order"
    assert found.fix == sqlite_custom_lines(cdr_config(master))
    # Exactly the README's lines for the README's variables.
    for line in found.fix[1:5]:
        assert line.removeprefix("; /etc/asterisk/") in README, line
    assert "; and in the dialplan: Set(CDR(hangupsms_order)=${HANGUPSMS_ORDER})" in found.fix


async def test_a_cdr_database_that_is_not_there_or_has_no_table_is_missing(
    tmp_path: Path,
) -> None:
    absent = await check_cdr(cdr_config(tmp_path / "nowhere.db"), "UTC")
    assert absent.status is Status.MISSING and "cannot open" in absent.text
    assert "asterisk group" in absent.degrades
    sqlite3.connect(tmp_path / "empty.db").close()
    empty = await check_cdr(cdr_config(tmp_path / "empty.db"), "UTC")
    assert empty.status is Status.MISSING and "no such table: cdr" in empty.text


@contextlib.contextmanager
def listening() -> Iterator[int]:
    """A port held by something that is not hangupsms (it accepts and says nothing)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def web(port: int, url: str = "https://pbx.example.com/sms") -> WebConfig:
    return WebConfig(public_url=url, host="127.0.0.1", port=port)


async def test_the_web_address_is_free_taken_by_hangupsms_or_taken_by_another(
    tmp_path: Path,
) -> None:
    port = free_port()
    free = await check_listener(web(port))
    assert (free.status, free.text) == (Status.OK, f"127.0.0.1:{port} can be bound")
    with listening() as taken:
        other = await check_listener(web(taken))
    assert other.status is Status.MISSING and "another program" in other.text
    async with web_rig(tmp_path) as rig:
        assert rig.daemon.web is not None and rig.daemon.web.port is not None
        ours = await check_listener(web(rig.daemon.web.port))
    assert ours.status is Status.OK
    assert ours.text.endswith("is the running daemon's: /healthz answers 200 (healthy)")
    refused = await check_listener(WebConfig(public_url="https://x.example", host="192.0.2.1",
                                             port=port))
    assert refused.status is Status.MISSING and "cannot be bound" in refused.text


def test_public_url_wants_https_and_a_public_host() -> None:
    assert check_public_url("https://pbx.example.com/sms").status is Status.OK
    plain = check_public_url("http://pbx.example.com/sms")
    assert plain.status is Status.WARN and "unencrypted" in plain.text
    assert plain.fix[1].strip().startswith("public_url: https://")
    for private in ("https://localhost:8080", "https://10.1.2.3/sms", "https://pbx/sms",
                    "https://[::1]/sms", "https://pbx.local/sms"):
        found = check_public_url(private)
        assert found.status is Status.WARN and "Twilio cannot call it" in found.text, private


async def test_doctor_reports_a_web_section_when_web_is_configured(tmp_path: Path) -> None:
    port = free_port()
    found, text, healthy = await run_doctor(
        tmp_path, FIXTURES / "a.ami",
        extra={"web": {"public_url": "http://pbx.example.com/sms", "host": "127.0.0.1",
                       "port": port}})
    assert healthy
    assert "\nweb\n" in text
    assert found["listen"].status is Status.OK
    assert found["public_url"].status is Status.WARN
