"""`to: notify`: the dialplan names who else hears of a call (AGI `notify?to=…`)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from hangupsms.config import ConfigError, load_config, parse_config
from hangupsms.models import PlannedMessage
from hangupsms.planner import plan
from hangupsms.render import Renderer
from hangupsms.replay import AmiReplayServer
from hangupsms.store import MessageRow
from tests.faketwilio import Received
from tests.lab import SECRET, USER, fake_twilio, lab_config, running_daemon
from tests.test_agi import answers, asterisk
from tests.test_agi_daemon import HOLD, LINKEDID, _live_call, _with_agi
from tests.test_calls import FIXTURES
from tests.test_config import BASE
from tests.test_planner import ANSWER_KEY, call_from_answer_key

ESCALATE = {"name": "escalate", "when": {"direction": "inbound"},
            "send": {"template": "escalate", "to": "notify", "via": "twilio"}}
ESCALATE_TEXT = "Call from {{ customer_number }} needs a call back."


def _config_with_notify(path: Path) -> Path:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["templates"]["escalate"] = ESCALATE_TEXT
    raw["rules"].append(ESCALATE)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _plan_notify(value: str | None) -> list[PlannedMessage]:
    """The `escalate` messages the reference config plans for an answered inbound call."""
    raw: Any = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["templates"]["escalate"] = ESCALATE_TEXT
    raw["rules"].append(ESCALATE)
    cfg = parse_config(yaml.safe_dump(raw, allow_unicode=True), environ={})
    fact = next(f for f in ANSWER_KEY if f["linkedid"] == LINKEDID)
    call = call_from_answer_key(fact)
    if value is not None:
        call = dataclasses.replace(call, variables={"HANGUPSMS_NOTIFY": value})
    return [m for m in plan(call, cfg, Renderer.from_config(cfg)) if m.rule == "escalate"]


def test_each_number_the_dialplan_gave_gets_the_message() -> None:
    planned = _plan_notify("+447700900555, 07700 900666")
    assert [(m.recipient, m.to, m.skip_reason) for m in planned] == [
        ("notify", "+447700900555", None), ("notify", "+447700900666", None)]
    assert planned[0].body is not None
    assert planned[0].body.text == "Call from +447700900123 needs a call back."
    assert planned[0].region == "GB"


def test_no_number_from_the_dialplan_is_recorded_as_skipped() -> None:
    (message,) = _plan_notify(None)
    assert (message.to, message.skip_reason) == (
        "", "no number to notify from the dialplan (HANGUPSMS_NOTIFY)")
    (blank,) = _plan_notify(" , ")
    assert blank.skip_reason == message.skip_reason


@pytest.mark.parametrize(("value", "reason"), [
    ("+33612345678x", "number to notify '+33612345678x' is not textable: not a number"),
    ("+12025550123", "number to notify '+12025550123' is not textable"),  # region not allowed
    ("201", "number to notify '201' is not textable"),  # an extension
])
def test_a_number_the_phone_policy_refuses_is_skipped_with_its_reason(
    value: str, reason: str
) -> None:
    (message,) = _plan_notify(value)
    assert message.skip_reason is not None and message.skip_reason.startswith(reason)


def test_at_most_three_numbers_are_texted_and_a_repeat_is_one() -> None:
    value = "+447700900551,+447700900552,07700900551,+447700900553,+447700900554"
    planned = _plan_notify(value)
    assert [(m.to, m.skip_reason) for m in planned] == [
        ("+447700900551", None), ("+447700900552", None), ("+447700900553", None),
        ("+447700900554", "more than 3 numbers to notify; '+447700900554' not texted"),
    ]


def test_notify_is_a_recipient_the_configuration_accepts() -> None:
    text = BASE.replace("to: customer", "to: notify", 1)
    assert parse_config(text, "test.yaml", environ={}).rules[0].send.to == "notify"
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE.replace("to: customer", "to: notifyy", 1), "t.yaml", environ={})
    assert caught.value.path == "rules[0].send.to"


async def _notify_mid_call(tmp_path: Path, script: str) -> tuple[list[Received], list[MessageRow]]:
    """Replay h_unicode with a `to: notify` rule; one AGI request mid-call; finish."""
    async with fake_twilio() as twilio, AmiReplayServer(
        [FIXTURES / "h_unicode.ami"], username=USER, secret=SECRET, hold_at=HOLD
    ) as server:
        config = _config_with_notify(_with_agi(lab_config(
            tmp_path, ami_port=server.port, twilio_url=twilio.url, twilio={"rate": 100})))
        assert load_config(config).rules[-1].send.to == "notify"
        async with running_daemon(config) as daemon, asyncio.timeout(30):
            await daemon.wait_until(_live_call(daemon))
            assert daemon.agi is not None and daemon.store is not None
            await asterisk(daemon.agi.port, script, uniqueid="1796413222.143",
                           replies=answers(LINKEDID))
            server.released.set()
            await server.events_done.wait()
            await daemon.wait_drained()
            rows = await daemon.store.history()
    return list(twilio.accepted), rows


async def test_agi_notify_texts_the_numbers_the_dialplan_gave(tmp_path: Path) -> None:
    accepted, rows = await _notify_mid_call(
        tmp_path, "notify?to=%2B447700900555,+447700900666,%2B1202555")
    escalations = sorted((m.to, m.body) for m in accepted if m.to != "+447700900123")
    body = "Call from +447700900123 needs a call back."
    assert escalations == [("+447700900555", body), ("+447700900666", body)]
    notified = {row.to_number: (row.state, row.reason) for row in rows if row.rule == "escalate"}
    assert notified["+447700900555"] == ("sent", None)
    assert notified["+447700900666"] == ("sent", None)
    state, reason = notified["+1202555"]
    assert state == "skipped" and reason is not None and "not textable" in reason
    assert {row.rule for row in rows} == {"thanks", "escalate"}  # the customer still thanked


async def test_a_call_the_dialplan_did_not_tag_notifies_nobody(tmp_path: Path) -> None:
    accepted, rows = await _notify_mid_call(tmp_path, "tag?order=Z-9")
    assert [m.to for m in accepted] == ["+447700900123"]
    (row,) = [row for row in rows if row.rule == "escalate"]
    assert (row.state, row.reason) == (
        "skipped", "no number to notify from the dialplan (HANGUPSMS_NOTIFY)")
