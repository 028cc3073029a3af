"""Rendering: the sandbox, hostile call data, SMS encodings and segment counts."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hangupsms.config import AgentConfig, Config, TemplateConfig, load_config
from hangupsms.models import (
    CompletedCall,
    Direction,
    Disposition,
    Encoding,
    EndReason,
)
from hangupsms.render import (
    Renderer,
    RenderError,
    call_context,
    measure,
    referenced_vars,
    worst_case_context,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
LONDON = ZoneInfo("Europe/London")

CALL = CompletedCall(
    pbx="lab",
    linkedid="1796413068.0",
    direction=Direction.INBOUND,
    customer_number="07700900123",
    customer_name="Alice",
    presentation_restricted=False,
    did="4000",
    queue="support",
    answered=True,
    disposition=Disposition.ANSWERED,
    queue_abandoned=False,
    agent_id="agent1",
    agent_name=None,
    agents_involved=("agent1",),
    talk_seconds=2,
    wait_seconds=1,
    variables={"HANGUPSMS_ORDER": "A-1042"},
    transferred=False,
    started_at=datetime(2026, 7, 1, 9, 0, 0, tzinfo=LONDON).timestamp(),
    ended_at=datetime(2026, 7, 1, 9, 0, 3, tzinfo=LONDON).timestamp(),
    end_reason=EndReason.LINKEDID_END,
    linkedid_end_seen=True,
)


@pytest.fixture
def cfg() -> Config:
    return load_config(FIXTURES / "reference.yaml", environ={})


def renderer(max_customer_name: int = 64, **templates: str | TemplateConfig) -> Renderer:
    specs = {
        name: spec if isinstance(spec, TemplateConfig) else TemplateConfig(name, spec)
        for name, spec in templates.items()
    }
    return Renderer(specs, max_customer_name)


# --- encodings and segments -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, Encoding.GSM7, 1),
        ("a" * 161, Encoding.GSM7, 2),
        ("a" * 306, Encoding.GSM7, 2),
        ("a" * 307, Encoding.GSM7, 3),
        ("{" * 80, Encoding.GSM7, 1),  # extension characters take two septets
        ("{" * 80 + "a", Encoding.GSM7, 2),
        ("€" * 76 + "a" * 9, Encoding.GSM7, 2),  # 161 septets in 85 characters
        ("a" * 152 + "€" + "a" * 152, Encoding.GSM7, 3),  # the escape is never split
        ("Ça coûte 5 £? Ñandú ÆØÅ @ _", Encoding.UCS2, 1),  # û is not GSM-7
        ("ж" * 70, Encoding.UCS2, 1),
        ("ж" * 71, Encoding.UCS2, 2),
        ("ж" * 134, Encoding.UCS2, 2),
        ("ж" * 135, Encoding.UCS2, 3),
        ("\U0001f600" * 35, Encoding.UCS2, 1),  # 70 UTF-16 code units
        ("\U0001f600" * 36, Encoding.UCS2, 2),
        ("ж" * 66 + "\U0001f600" + "ж" * 66, Encoding.UCS2, 3),  # surrogate pair kept whole
        ("a" * 159 + "é", Encoding.GSM7, 1),
        ("a" * 69 + "ё", Encoding.UCS2, 1),
    ],
)
def test_encoding_and_segments(text: str, encoding: Encoding, segments: int) -> None:
    rendered = measure(text)
    assert (rendered.text, rendered.encoding, rendered.segments) == (text, encoding, segments)


# --- the sandbox and hostile data ------------------------------------------------------


def test_reference_thanks_template_renders(cfg: Config) -> None:
    context = call_context(CALL, cfg, "+447700900123")
    rendered = Renderer.from_config(cfg).render("thanks", context)
    assert rendered.text == "Thanks for calling, Alice. You spoke with agent1."
    assert (rendered.encoding, rendered.segments) == (Encoding.GSM7, 1)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("{{7*7}}", "{{7*7}}"),
        ("{% for x in range(9) %}x{% endfor %}", "{% for x in range(9) %}x{% endfor %}"),
        ("{{ ''.__class__.__mro__ }}", "{{ ''.__class__.__mro__ }}"),
        ("Bob\r\nSTOP\r\n", "BobSTOP"),
        ("Eve\u202egnp.exe", "Evegnp.exe"),
        ('Zoë; DROP TABLE "x" {{7*7}}', 'Zoë; DROP TABLE "x" {{7*7}}'),
        ("\x1b[31mred\x00", "[31mred"),
    ],
)
def test_hostile_customer_names_render_as_inert_text(cfg: Config, name: str, shown: str) -> None:
    context = call_context(dataclasses.replace(CALL, customer_name=name), cfg, None)
    rendered = renderer(t="Hi {{ customer_name }}!").render("t", context)
    assert rendered.text == f"Hi {shown}!"


def test_ten_kilobyte_customer_name_is_capped(cfg: Config) -> None:
    context = call_context(dataclasses.replace(CALL, customer_name="A" * 10_000), cfg, None)
    assert context["customer_name"] == "A" * cfg.max_customer_name
    text = renderer(t="{{ customer_name }}").render("t", context).text
    assert text == "A" * 64


def test_renderer_caps_a_customer_name_it_was_handed_directly() -> None:
    rendered = renderer(10, t="{{ customer_name }}").render("t", {"customer_name": "B\n" * 50})
    assert rendered.text == "B" * 10


def test_missing_variable_raises_instead_of_rendering_blank(cfg: Config) -> None:
    context = call_context(CALL, cfg, None)
    with pytest.raises(RenderError, match="HANGUPSMS_MISSING"):
        renderer(t="Order {{ vars.HANGUPSMS_MISSING }}").render("t", context)
    with pytest.raises(RenderError, match="nosuch"):
        renderer(t="{{ nosuch }}").render("t", context)


def test_template_cannot_reach_python_internals() -> None:
    with pytest.raises(RenderError):
        renderer(t="{{ ''.__class__.__mro__ }}").render("t", {})


def test_template_cannot_mutate_call_data(cfg: Config) -> None:
    context = call_context(CALL, cfg, None)
    with pytest.raises(RenderError, match="SecurityError"):
        renderer(t="{{ vars.update({'x': 1}) }}").render("t", context)


def test_optional_value_that_is_none_renders_blank_not_none(cfg: Config) -> None:
    context = call_context(dataclasses.replace(CALL, queue=None), cfg, None)
    assert renderer(t="Queue:{{ queue }}.").render("t", context).text == "Queue:."


def test_template_longer_than_max_segments_is_refused() -> None:
    spec = TemplateConfig("t", "{{ customer_name }} " + "x" * 150, max_segments=1)
    with pytest.raises(RenderError, match=r"needs 2 segments.*max_segments is 1"):
        renderer(t=spec).render("t", {"customer_name": "Alexandra-Jane"})
    assert renderer(t=spec).render("t", {"customer_name": "Al"}).segments == 1


def test_empty_rendered_message_is_refused() -> None:
    with pytest.raises(RenderError, match="empty"):
        renderer(t="{{ customer_name }}").render("t", {"customer_name": "  "})


def test_runtime_error_in_a_template_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        renderer(t="{{ 1 / 0 }}").render("t", {})


def test_unknown_template_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="unknown template 'nope'"):
        renderer(t="x").render("nope", {})


# --- the call context ------------------------------------------------------------------


def test_call_context_has_every_documented_variable(cfg: Config) -> None:
    context = call_context(CALL, cfg, "+447700900123")
    assert set(context) == {
        "customer_number", "customer_name", "did", "queue", "agent_id", "agent_name",
        "direction", "answered", "disposition", "talk_seconds", "wait_seconds", "started_at",
        "ended_at", "linkedid", "pbx", "vars",
    }  # fmt: skip
    assert context["customer_number"] == "+447700900123"
    assert context["direction"] == "inbound"
    assert context["disposition"] == "answered"
    assert context["vars"] == {"HANGUPSMS_ORDER": "A-1042"}
    assert type(context["vars"]) is dict
    ended = context["ended_at"]
    assert isinstance(ended, datetime)
    assert ended.tzinfo == LONDON
    assert (ended.hour, ended.minute, ended.second, ended.utcoffset()) == (
        9, 0, 3, datetime(2026, 7, 1, tzinfo=LONDON).utcoffset(),
    )  # fmt: skip


def test_unreadable_customer_number_is_shown_as_asterisk_gave_it(cfg: Config) -> None:
    call = dataclasses.replace(CALL, customer_number="anonymous")
    assert call_context(call, cfg, None)["customer_number"] == "anonymous"


def test_agent_name_falls_back_to_the_agents_directory(cfg: Config) -> None:
    agents = {"agent1": AgentConfig("agent1", name="Agent One", mobile="+447700900111")}
    with_directory = dataclasses.replace(cfg, agents=agents)
    assert call_context(CALL, with_directory, None)["agent_name"] == "Agent One"
    named_call = dataclasses.replace(CALL, agent_name="Annie")
    assert call_context(named_call, with_directory, None)["agent_name"] == "Annie"
    assert call_context(CALL, cfg, None)["agent_name"] is None


def test_started_at_can_be_formatted_in_a_template(cfg: Config) -> None:
    context = call_context(CALL, cfg, None)
    rendered = renderer(t="{{ started_at.strftime('%H:%M %Z') }}").render("t", context)
    assert rendered.text == "09:00 BST"


# --- the worst case for `hangupsms check` -----------------------------------------------


def test_referenced_vars_are_found_in_every_spelling() -> None:
    sources = ["{{ vars.A }}{{ vars['B'] }}", "{{ vars.get('C', '') }}{{ vars.items() | list }}"]
    assert referenced_vars(sources) == {"A", "B", "C"}


def test_worst_case_context_forces_ucs2_and_fills_every_var(cfg: Config) -> None:
    context = worst_case_context(cfg)
    name = context["customer_name"]
    assert isinstance(name, str)
    assert len(name) == cfg.max_customer_name
    vars_ = context["vars"]
    assert isinstance(vars_, dict)
    assert set(vars_) == {"HANGUPSMS_ORDER"}
    renderer_ = Renderer.from_config(cfg)
    results = {name: renderer_.render(name, context) for name in cfg.templates}
    assert results["thanks"].encoding == Encoding.UCS2
    # 20 + 2 (emoji) + 63 + 17 + 32 (agent name placeholder) + 1 = 135 UTF-16 units > 2 x 67.
    assert results["thanks"].segments == 3
    assert results["appointment"].encoding == Encoding.GSM7
