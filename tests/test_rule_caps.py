"""Per-rule caps (`send.caps`): at most one survey per customer a week, checked at send time."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from hangupsms.cli import EXIT_OK, main
from hangupsms.config import ConfigError, parse_config
from hangupsms.settings import WEEK, Cap
from tests.faketwilio import FakeClock
from tests.policylab import build, only_call, reference_with, rule
from tests.test_policy_outbox import outbox_for

ALICE = "+447700900123"  # a.ami: answered in queue support
DAY = 86_400.0


def _with_survey(**send: Any) -> dict[str, Any]:
    """The reference rules with `thanks` as a capped survey and the missed-call text."""
    raw = reference_with()
    survey = rule(raw, "thanks")
    survey["name"] = "survey"
    survey["send"].update(caps=[{"max": 1, "per": "7d"}], **send)
    raw["rules"] = [survey, rule(raw, "missed")]
    return raw


def test_rule_caps_are_read_and_bad_ones_name_their_key_and_line(tmp_path: Path) -> None:
    survey = next(r for r in build(_with_survey(), tmp_path).rules if r.name == "survey")
    assert survey.send.caps == (Cap(1, WEEK),)
    raw = _with_survey()
    rule(raw, "survey")["send"]["caps"] = [{"max": 1, "every": "7d"}]
    text = yaml.safe_dump(raw, sort_keys=False)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "p.yaml")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "every:" in t)
    assert str(caught.value).startswith(f"p.yaml:{line}: rules[0].send.caps[0]")


def test_check_prints_a_rule_s_own_caps(tmp_path: Path) -> None:
    raw = _with_survey()
    raw["database"] = str(tmp_path / "h.db")
    config = tmp_path / "h.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    out = io.StringIO()
    assert main(["check", "-c", str(config)], out=out) == EXIT_OK
    (line,) = [t for t in out.getvalue().splitlines() if t.strip().startswith("survey:")]
    assert line.endswith("caps: none; rule caps: 1 per 1w")


async def test_a_second_survey_within_the_week_expires_and_other_rules_still_send(
        tmp_path: Path) -> None:
    clock = FakeClock()
    async for outbox in outbox_for(_with_survey(expires_after="1h"), tmp_path, clock):
        answered = only_call(outbox.cfg, "a")
        await outbox.pipeline.record([answered])
        await outbox.sender.drain()
        clock.advance(DAY)
        await outbox.pipeline.record([dataclasses.replace(answered, linkedid="again")])
        # Another rule's text to her is not this rule's to count.
        missed = dataclasses.replace(only_call(outbox.cfg, "c", shift=DAY),
                                     customer_number=ALICE)
        await outbox.pipeline.record([missed])
        await outbox.sender.drain()
        clock.advance(7 * DAY)
        await outbox.pipeline.record([dataclasses.replace(answered, linkedid="next-week")])
        await outbox.sender.drain()
        states = outbox.states()
        assert states[(answered.linkedid, "survey")] == ("sent", None)
        assert states[("again", "survey")] == (
            "expired", "rule survey cap 1 per 1w reached; no chance before expires_after")
        assert states[(missed.linkedid, "missed")] == ("sent", None)
        assert states[("next-week", "survey")] == ("sent", None)
        assert len(outbox.texts_to(ALICE)) == 3


async def test_without_expires_after_a_capped_survey_waits_for_its_slot(
        tmp_path: Path) -> None:
    clock = FakeClock()
    async for outbox in outbox_for(_with_survey(), tmp_path, clock):
        answered = only_call(outbox.cfg, "a")
        await outbox.pipeline.record([answered])
        await outbox.sender.drain()
        first_sent = clock()
        clock.advance(DAY)
        await outbox.pipeline.record([dataclasses.replace(answered, linkedid="again")])
        await outbox.sender.drain()
        assert outbox.states()[("again", "survey")] == (
            "deferred", "rule survey cap 1 per 1w reached")
        (row,) = await outbox.store.history(linkedid="again")
        assert [a.outcome for a in await outbox.store.attempts(row.id)] == ["policy_send_at"]
        [(send_at,)] = await outbox.store.rows(
            "SELECT send_at FROM messages WHERE id = ?", (row.id,))
        assert send_at == first_sent + WEEK
        clock.advance(WEEK - DAY)
        await outbox.sender.drain()
        assert outbox.states()[("again", "survey")] == ("sent", None)
