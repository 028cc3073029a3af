"""A FastAGI tag from the dialplan reaches the message of its call, through the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from hangupsms.daemon import Daemon
from hangupsms.replay import AmiReplayServer
from hangupsms.store import MessageRow
from tests.faketwilio import Received
from tests.lab import SECRET, USER, fake_twilio, lab_config, running_daemon
from tests.test_agi import answers, asterisk
from tests.test_calls import FIXTURES

LINKEDID = "1796413222.142"  # h_unicode: "Zoë…" <+447700900123> -> 4008 -> agent1
HOLD = 60  # mid-call: the caller is talking to the agent


def _with_agi(path: Path) -> Path:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["agi"] = {"port": 0, "deadline": 2}
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


async def _tag_mid_call(
    tmp_path: Path, script: str
) -> tuple[list[str], list[Received], list[MessageRow]]:
    """Replay h_unicode, send one AGI request while the caller talks to the agent, finish.

    Returns the commands the AGI server sent, what reached the fake Twilio, and the
    messages recorded for the call.
    """
    async with fake_twilio() as twilio, AmiReplayServer(
        [FIXTURES / "h_unicode.ami"], username=USER, secret=SECRET, hold_at=HOLD
    ) as server:
        config = _with_agi(lab_config(tmp_path, ami_port=server.port, twilio_url=twilio.url,
                                      twilio={"rate": 100}))
        async with running_daemon(config) as daemon, asyncio.timeout(30):
            await daemon.wait_until(_live_call(daemon))
            assert daemon.agi is not None and daemon.store is not None
            commands = await asterisk(daemon.agi.port, script, uniqueid="1796413222.143",
                                      replies=answers(LINKEDID))
            server.released.set()
            await server.events_done.wait()
            await daemon.wait_drained()
            rows = await daemon.store.history()
    return commands, list(twilio.accepted), rows


async def test_a_tag_during_the_call_chooses_its_message(tmp_path: Path) -> None:
    commands, accepted, _ = await _tag_mid_call(tmp_path, "tag?template=appointment&order=Z-9")
    assert commands[0] == "GET VARIABLE CHANNEL(linkedid)"
    assert [(m.to, m.body) for m in accepted] == [
        ("+447700900123", "Your appointment Z-9 is confirmed.")  # not the plain thank-you
    ]


async def test_skip_from_the_dialplan_records_the_call_and_texts_nobody(tmp_path: Path) -> None:
    _, accepted, rows = await _tag_mid_call(tmp_path, "skip")
    assert accepted == []
    (row,) = rows
    assert (row.rule, row.state) == ("thanks", "skipped")
    assert row.reason is not None and "HANGUPSMS_SKIP" in row.reason


def _live_call(daemon: Daemon) -> Callable[[], Awaitable[bool]]:
    async def live() -> bool:
        return daemon.pipeline is not None and daemon.pipeline.live_calls() == 1 and (
            daemon.queue.qsize() == 0)
    return live
