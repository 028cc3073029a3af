"""Caller-controlled text: 10,000 hostile caller names render as inert, clean, capped text.

The names come from a seeded generator (the same 10,000 on every run) mixing template syntax,
line breaks, control, bidi and zero-width characters, emoji, GSM-7 extension characters, lone
surrogates, many scripts and 10 KB strings. Each goes through `plan()` with the reference
configuration, exactly as a completed call's name does in the daemon.
"""

from __future__ import annotations

import dataclasses
import random
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from hangupsms.config import Config, load_config
from hangupsms.models import (
    CompletedCall,
    Direction,
    Disposition,
    Encoding,
    EndReason,
    PlannedMessage,
)
from hangupsms.planner import plan
from hangupsms.render import Renderer

FIXTURES = Path(__file__).parent / "fixtures" / "ami"
SEED = 20260806
CORPUS_SIZE = 10_000
CUSTOMER = "+447700900123"
AGENT = "Agent One"

# What clean_text removes: controls, format characters (bidi, zero-width), surrogates, line and
# paragraph separators. The explicit lists below are checked too, independently of Unicode data.
STRIPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
C0 = [chr(code) for code in range(0x20)]
C1 = [chr(code) for code in range(0x80, 0xA0)]
BIDI = [chr(code) for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))] + [
    "\u200e", "\u200f", "\u061c",
]  # fmt: skip
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u180e", "\u00ad"]
SEPARATORS = ["\u2028", "\u2029"]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d"]
FORBIDDEN = frozenset([*C0, "\x7f", *C1, *BIDI, *ZERO_WIDTH, *SEPARATORS, *SURROGATES])

JINJA = [
    "{{7*7}}", "{{ 7*7 }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{# hidden #}",
    "{% for i in range(9) %}x{% endfor %}", "{% raw %}", "{{ customer_number }}", "{{",
    "}}", "{%", "%}", "{{ lipsum.__globals__['os'].popen('id').read() }}", "{{ self }}",
    "{{ cycler.__init__.__globals__ }}", "{% include 'thanks' %}", "{{ vars }}",
]  # fmt: skip
STR_FORMAT = ["{0}", "{name!r}", "{customer_number}", "{0.__class__}", "%s", "%(to)s", "${HOME}"]
LINE_BREAKS = ["\r\n", "\r", "\n", "\r\nTo: +15005550006\r\n", "\n\nBcc: x", "\x85", "\v", "\f"]
EMOJI = [
    "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f1ec\U0001f1e7",
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "\u2764\ufe0f", "\U0001f9d1\U0001f3ff\u200d\U0001f680", "1\ufe0f\u20e3", "\U0001f4a9",
]  # fmt: skip
GSM7_EXTENSION_TEXT = ["€", "[", "]", "{", "}", "|", "^", "~", "\\"]
SCRIPTS = [
    "Zoë", "Łukasz", "Ольга", "محمد", "שלום", "张伟", "さくら", "김민준", "Ελένη", "नमस्ते",
    "ไทย", "Ñoño", "O'Brien & Sons", 'Say "hi"', "<script>alert(1)</script>", "Ǆemal",
    "'; DROP TABLE calls; --", 'A\\"B', "\u00a0", "\u3000", " ", "e\u0301", "ﷺ", "Ａｌｉｃｅ",
]  # fmt: skip
FRAGMENTS = [
    JINJA, STR_FORMAT, LINE_BREAKS, C0, C1, ["\x7f"], BIDI, ZERO_WIDTH, SEPARATORS, EMOJI,
    GSM7_EXTENSION_TEXT, SURROGATES, SCRIPTS,
]  # fmt: skip


def hostile_names(count: int = CORPUS_SIZE, seed: int = SEED) -> Iterator[str]:
    """`count` names, the same on every run: 1 to 8 hostile fragments, or about 10 KB of them."""
    rng = random.Random(seed)
    for index in range(count):
        pieces = [rng.choice(rng.choice(FRAGMENTS)) for _ in range(rng.randint(1, 8))]
        name = "".join(pieces)
        if index % 20 == 0:  # every 20th: a 10 KB name
            name = (name * (10_240 // len(name) + 1))[:10_240]
        yield name


def expected_name(raw: str, limit: int) -> str:
    """The name as it must appear: stripped characters gone, trimmed, capped at `limit`."""
    kept = "".join(c for c in raw if unicodedata.category(c) not in STRIPPED_CATEGORIES)
    return kept.strip()[:limit].strip()


# GSM 03.38 default alphabet and its extension table (ESC + one septet), from the standard.
GSM7_DEFAULT = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
) - {"\x1b"}
GSM7_ESCAPED = set("\f^{}\\[~]|€")


def parts_needed(units: list[int], single: int, per_part: int) -> int:
    """Segments for characters of `units` width each; no character is split between parts."""
    total = sum(units)
    if total <= single:
        return 1
    parts, room = 1, per_part
    for width in units:
        if width > room:
            parts, room = parts + 1, per_part
        room -= width
    return parts


def expected_encoding(text: str) -> tuple[Encoding, int]:
    """The encoding and segment count of `text`, computed from the standard's numbers."""
    if set(text) <= GSM7_DEFAULT | GSM7_ESCAPED:
        septets = [2 if char in GSM7_ESCAPED else 1 for char in text]
        return Encoding.GSM7, parts_needed(septets, 160, 153)
    units = [len(char.encode("utf-16-le")) // 2 for char in text]
    return Encoding.UCS2, parts_needed(units, 70, 67)


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(FIXTURES / "reference.yaml", environ={})


@pytest.fixture(scope="module")
def renderer(cfg: Config) -> Renderer:
    return Renderer.from_config(cfg)


def answered_call(name: str) -> CompletedCall:
    """An inbound call agent1 answered: the reference `thanks` rule texts its customer."""
    return CompletedCall(
        pbx="lab", linkedid="1796413068.0", direction=Direction.INBOUND,
        customer_number=CUSTOMER, customer_name=name, presentation_restricted=False,
        did="4000", queue="support", answered=True, disposition=Disposition.ANSWERED,
        queue_abandoned=False, agent_id="agent1", agent_name=AGENT, agents_involved=("agent1",),
        talk_seconds=2, wait_seconds=1, variables={}, transferred=False,
        started_at=1796413068.0, ended_at=1796413071.0, end_reason=EndReason.LINKEDID_END,
        linkedid_end_seen=True,
    )  # fmt: skip


def thanks_text(name: str) -> str:
    return f"Thanks for calling, {name or 'there'}. You spoke with {AGENT}."


def the_one_message(cfg: Config, renderer: Renderer, name: str) -> PlannedMessage:
    [message] = plan(answered_call(name), cfg, renderer)
    return message


def test_the_corpus_is_deterministic_and_hostile() -> None:
    names = list(hostile_names())
    assert len(names) == CORPUS_SIZE
    assert names[:50] == list(hostile_names(50))
    assert sum(len(name) >= 10_240 for name in names) == CORPUS_SIZE // 20
    for fragments in FRAGMENTS:  # every kind of fragment occurs
        assert any(piece in name for name in names for piece in fragments[:1])
    assert any(name != expected_name(name, 10**6) for name in names)  # some get stripped


def test_ten_thousand_hostile_names_render_as_inert_capped_text(
    cfg: Config, renderer: Renderer
) -> None:
    limit = cfg.max_customer_name
    longest = len(thanks_text("x" * limit))
    for name in hostile_names():
        message = the_one_message(cfg, renderer, name)
        assert (message.rule, message.recipient, message.to) == ("thanks", "customer", CUSTOMER)
        assert message.skip_reason is None
        assert message.body is not None
        text = message.body.text
        # Literal and never evaluated: the whole body is the template around the clean name.
        assert text == thanks_text(expected_name(name, limit)), repr(name)
        assert not FORBIDDEN.intersection(text), repr(name)
        assert "\r" not in text and "\n" not in text
        assert len(text) <= longest
        assert (message.body.encoding, message.body.segments) == expected_encoding(text)


@pytest.mark.parametrize("name", [
    "{{7*7}}", "{{ 7*7 }}", "{% if 7*7 %}x{% endif %}", "{0}{name!r}", "{{ ''.__class__ }}",
])  # fmt: skip
def test_template_syntax_in_a_name_stays_as_written(
    cfg: Config, renderer: Renderer, name: str
) -> None:
    body = the_one_message(cfg, renderer, name).body
    assert body is not None
    assert body.text == thanks_text(name)
    assert "49" not in body.text
    assert "class" not in body.text.replace(name, "")


def test_a_name_cannot_change_the_recipient_or_add_a_line(
    cfg: Config, renderer: Renderer
) -> None:
    name = "Eve\r\nTo: +15005550006\r\n\r\nBody: pay now {{ customer_number }}"
    message = the_one_message(cfg, renderer, name)
    assert message.to == CUSTOMER
    assert message.body is not None
    cleaned = "EveTo: +15005550006Body: pay now {{ customer_number }}"
    assert message.body.text == thanks_text(cleaned)


def test_bidi_override_cannot_reorder_the_message(cfg: Config, renderer: Renderer) -> None:
    body = the_one_message(cfg, renderer, "\u202eevil\u2066\u200fname\u202c").body
    assert body is not None
    assert body.text == thanks_text("evilname")


def test_a_long_name_is_capped_to_the_configured_length(cfg: Config) -> None:
    # The agent's name is capped too: a cap of its length keeps it whole.
    capped = dataclasses.replace(cfg, max_customer_name=len(AGENT))
    message = the_one_message(capped, Renderer.from_config(capped), "Bartholomew" * 1000)
    assert message.body is not None
    assert message.body.text == thanks_text("Bartholom")


def test_a_name_of_only_control_characters_falls_back_to_the_template_default(
    cfg: Config, renderer: Renderer
) -> None:
    body = the_one_message(cfg, renderer, "".join(C0 + C1 + BIDI + ZERO_WIDTH)).body
    assert body is not None
    assert body.text == thanks_text("")


@pytest.mark.parametrize(("name", "encoding"), [
    ("Alice", Encoding.GSM7),
    ("Ñoño Müller", Encoding.GSM7),
    ("Zoë", Encoding.UCS2),  # ë is in neither GSM-7 table
    ("A€[]{}|^~\\", Encoding.GSM7),
    ("Alice \U0001f600", Encoding.UCS2),
    ("\U0001f1ec\U0001f1e7", Encoding.UCS2),
    ("Ольга", Encoding.UCS2),
], ids=["plain", "gsm-accents", "other-accent", "gsm-extension", "emoji", "flag", "cyrillic"])
def test_the_name_decides_gsm7_or_ucs2_and_the_segment_count(
    cfg: Config, renderer: Renderer, name: str, encoding: Encoding
) -> None:
    body = the_one_message(cfg, renderer, name).body
    assert body is not None
    assert body.encoding is encoding
    assert (body.encoding, body.segments) == expected_encoding(body.text)


def test_an_emoji_pushes_a_one_segment_message_to_two_ucs2_segments(cfg: Config) -> None:
    wide = dataclasses.replace(cfg, max_customer_name=1000)
    renderer = Renderer.from_config(wide)
    plain = the_one_message(wide, renderer, "A" * 40).body
    emoji = the_one_message(wide, renderer, "A" * 39 + "\U0001f600").body
    assert plain is not None and emoji is not None
    assert (plain.encoding, plain.segments) == (Encoding.GSM7, 1)
    # 87 characters, one a surrogate pair: 88 UTF-16 units > 70, so parts of 67 units.
    assert len(emoji.text) == 87
    assert (emoji.encoding, emoji.segments) == (Encoding.UCS2, 2)


def test_gsm7_extension_characters_count_two_septets(cfg: Config) -> None:
    wide = dataclasses.replace(cfg, max_customer_name=1000)
    renderer = Renderer.from_config(wide)
    template_len = len(thanks_text("x")) - 1  # 47 septets around the name
    fits = the_one_message(wide, renderer, "€" * ((160 - template_len) // 2)).body
    spills = the_one_message(wide, renderer, "€" * ((160 - template_len) // 2 + 1)).body
    assert fits is not None and spills is not None
    assert (fits.encoding, fits.segments) == (Encoding.GSM7, 1)
    assert (spills.encoding, spills.segments) == (Encoding.GSM7, 2)


def missed_call(number: str) -> CompletedCall:
    """An unanswered inbound call: `missed` texts the caller, `missed-alert` the manager."""
    return dataclasses.replace(
        answered_call("Mallory"), customer_number=number, answered=False,
        disposition=Disposition.NO_ANSWER, agent_id=None, agent_name=None, agents_involved=(),
        talk_seconds=0,
    )  # fmt: skip


MANAGER = "+447700900777"  # the reference missed-alert recipient


def test_a_hostile_caller_number_never_becomes_a_recipient(
    cfg: Config, renderer: Renderer
) -> None:
    for number in list(hostile_names(1000, seed=SEED + 1)):
        missed, alert = plan(missed_call(number), cfg, renderer)
        assert missed.skip_reason is not None  # not textable: recorded, never sent
        assert "\r" not in missed.skip_reason and "\n" not in missed.skip_reason
        assert (alert.to, alert.skip_reason) == (MANAGER, None)


def test_a_hostile_caller_number_reaches_a_template_clean_and_capped(
    cfg: Config, renderer: Renderer
) -> None:
    longest = len("Missed call from  to 4000 (queue support).") + cfg.max_customer_name
    for number in ["+33612345678\r\nX", "\u202e+33612345678", "x" * 10_240,
                   *hostile_names(1000, seed=SEED + 1)]:
        _, alert = plan(missed_call(number), cfg, renderer)
        assert alert.body is not None
        text = alert.body.text
        assert not FORBIDDEN.intersection(text), repr(number)
        assert "\r" not in text and "\n" not in text
        assert len(text) <= longest
