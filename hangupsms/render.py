"""Message bodies from Jinja2 templates in a sandbox, measured in SMS segments.

Templates come from the configuration; call data (a caller's name is whatever the caller's
network sent) only ever enters as variables, so `{{7*7}}` in a name stays those characters.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hangupsms.models import (
    CompletedCall,
    CouponSlot,
    Direction,
    Disposition,
    Encoding,
    EndReason,
    RenderedText,
    TrackedLink,
)

if TYPE_CHECKING:
    from hangupsms.config import Config, TemplateConfig

# GSM 03.38: the basic table (one septet each) and the extension table (escape + one septet).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
# (single message, per part of a concatenated one): the UDH takes 7 septets or 3 UTF-16 units.
_GSM7_LIMITS = (160, 153)
_UCS2_LIMITS = (70, 67)
# Unicode categories removed from caller-controlled text: controls (CR, LF, ESC…), format
# characters (bidi overrides such as U+202E), lone surrogates, line/paragraph separators.
_STRIPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
_PLACEHOLDER = "W" * 40
# Segments are counted with a coupon code this long until the real code is bound.
COUPON_NOMINAL = "W" * 12
TEMPLATE_FUNCTIONS = ("link", "coupon")


class RenderError(Exception):
    """A template could not be turned into an acceptable message."""


def _none_as_blank(value: object) -> object:
    # An unset optional (agent_name, queue) must not reach a customer as the word "None".
    return "" if value is None else value


def sandbox() -> ImmutableSandboxedEnvironment:
    """The one Jinja2 environment templates are compiled and rendered in."""
    # Plain-text SMS: HTML escaping would corrupt names such as "O'Brien & Sons".
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, finalize=_none_as_blank
    )


def measure(text: str) -> RenderedText:
    """The SMS encoding of `text` and how many segments it takes."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        widths = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return RenderedText(text, Encoding.GSM7, _segments(widths, *_GSM7_LIMITS))
    # UCS-2 counts UTF-16 code units: a character outside the BMP (most emoji) takes two.
    widths = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return RenderedText(text, Encoding.UCS2, _segments(widths, *_UCS2_LIMITS))


def _segments(widths: list[int], single: int, part: int) -> int:
    if sum(widths) <= single:
        return 1
    # An escaped GSM character or a surrogate pair is never split across two parts.
    count, used = 1, 0
    for width in widths:
        if used + width > part:
            count, used = count + 1, 0
        used += width
    return count


def clean_text(value: str, limit: int) -> str:
    """Caller-controlled text without control or bidi characters, at most `limit` characters."""
    kept = "".join(c for c in value if unicodedata.category(c) not in _STRIPPED_CATEGORIES)
    return kept.strip()[:limit].strip()


class _Extras:
    """What one rendering's `link()` and `coupon()` calls asked for.

    Each link gets a fresh token (128 random bits): per message, unguessable. A coupon is
    a marker holding a per-rendering nonce, so no text from the call (a caller's name,
    a dialplan variable) can forge one and take a code from a pool.
    """

    def __init__(self, public_url: str | None) -> None:
        self._public_url = public_url
        self._nonce = secrets.token_hex(8)
        self.links: list[TrackedLink] = []
        self.coupons: list[CouponSlot] = []

    def link(self, url: object, tag: object = "") -> str:
        if self._public_url is None:
            raise ValueError("link() needs web.public_url in the configuration")
        target = str(url)
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"link() takes an absolute http(s) URL, not {target[:80]!r}")
        token = secrets.token_urlsafe(16)
        self.links.append(TrackedLink(token, target, str(tag)))
        return f"{self._public_url}/r/{token}"

    def coupon(self, pool: object) -> str:
        marker = f"\x00{self._nonce}:{len(self.coupons)}\x00"
        self.coupons.append(CouponSlot(marker, str(pool)))
        return marker

    def nominal(self, text: str) -> str:
        for slot in self.coupons:
            text = text.replace(slot.marker, COUPON_NOMINAL)
        return text


class Renderer:
    """Renders the configured templates, each compiled once."""

    def __init__(
        self, templates: Mapping[str, TemplateConfig], max_customer_name: int = 64,
        public_url: str | None = None,
    ) -> None:
        environment = sandbox()
        self._compiled: dict[str, tuple[Template, int | None]] = {
            name: (environment.from_string(spec.text), spec.max_segments)
            for name, spec in templates.items()
        }
        self._max_customer_name = max_customer_name
        self._public_url = public_url

    @classmethod
    def from_config(cls, cfg: Config) -> Renderer:
        public_url = cfg.web.public_url if cfg.web is not None else None
        return cls(cfg.templates, cfg.max_customer_name, public_url)

    def render(self, template_name: str, context: Mapping[str, object]) -> RenderedText:
        """The message `template_name` makes of `context`; RenderError when it cannot be sent."""
        if template_name not in self._compiled:
            raise RenderError(f"unknown template '{template_name}'")
        template, max_segments = self._compiled[template_name]
        values = dict(context)
        name = values.get("customer_name")
        if isinstance(name, str):
            values["customer_name"] = clean_text(name, self._max_customer_name)
        extras = _Extras(self._public_url)
        values.update(link=extras.link, coupon=extras.coupon)
        try:
            text = template.render(values)
        except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
            raise RenderError(f"template '{template_name}': {type(exc).__name__}: {exc}") from exc
        if not text.strip():
            raise RenderError(f"template '{template_name}' rendered an empty message")
        measured = measure(extras.nominal(text))
        if max_segments is not None and measured.segments > max_segments:
            raise RenderError(
                f"template '{template_name}' needs {measured.segments} segments "
                f"({measured.encoding}, {len(text)} characters); max_segments is {max_segments}"
            )
        return RenderedText(text, measured.encoding, measured.segments,
                            tuple(extras.links), tuple(extras.coupons))


def shown_text(rendered: RenderedText) -> str:
    """The text for a person to read: each coupon still to be taken as `[coupon:pool]`."""
    text = rendered.text
    for slot in rendered.coupons:
        text = text.replace(slot.marker, f"[coupon:{slot.pool}]")
    return text


def called_functions(source: str) -> frozenset[str]:
    """Which of `link()` and `coupon()` a template calls."""
    tree = sandbox().parse(source)
    return frozenset(
        call.node.name for call in tree.find_all(nodes.Call)
        if isinstance(call.node, nodes.Name) and call.node.name in TEMPLATE_FUNCTIONS
    )


def call_context(call: CompletedCall, cfg: Config, customer_e164: str | None) -> dict[str, object]:
    """The variables a template sees for `call`; times are aware, in `cfg.timezone`."""
    tz = ZoneInfo(cfg.timezone)
    agent = cfg.agents.get(call.agent_id) if call.agent_id is not None else None
    agent_name = call.agent_name or (agent.name if agent is not None else None)
    return {
        # Not a readable number: whatever the caller's network sent, so caller text too.
        "customer_number": customer_e164 or clean_text(call.customer_number, cfg.max_customer_name),
        "customer_name": clean_text(call.customer_name, cfg.max_customer_name),
        "did": call.did,
        "queue": call.queue,
        "agent_id": call.agent_id,
        "agent_name": clean_text(agent_name or "", cfg.max_customer_name) or None,
        "direction": call.direction.value,
        "answered": call.answered,
        "disposition": call.disposition.value,
        "talk_seconds": call.talk_seconds,
        "wait_seconds": call.wait_seconds,
        "started_at": datetime.fromtimestamp(call.started_at, tz),
        "ended_at": datetime.fromtimestamp(call.ended_at, tz),
        "linkedid": call.linkedid,
        "pbx": call.pbx,
        "vars": dict(call.variables),
    }


def referenced_vars(sources: Iterable[str]) -> frozenset[str]:
    """The names templates read as `vars.X`, `vars['X']` or `vars.get('X')`."""
    environment = sandbox()
    found: set[str] = set()
    for source in sources:
        tree = environment.parse(source)
        for getattr_node in tree.find_all(nodes.Getattr):
            if _is_vars(getattr_node.node) and getattr_node.attr not in _DICT_METHODS:
                found.add(getattr_node.attr)
        for item in tree.find_all(nodes.Getitem):
            if _is_vars(item.node) and isinstance(item.arg, nodes.Const):
                found.add(str(item.arg.value))
        for call in tree.find_all(nodes.Call):
            callee = call.node
            if isinstance(callee, nodes.Getattr) and _is_vars(callee.node) and call.args:
                first = call.args[0]
                if callee.attr == "get" and isinstance(first, nodes.Const):
                    found.add(str(first.value))
    return frozenset(found)


def _is_vars(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "vars"


def worst_case_context(cfg: Config) -> dict[str, object]:
    """A call with the longest plausible values, for `hangupsms check` segment counts.

    The customer name is `max_customer_name` characters and starts with an emoji, which
    forces UCS-2; every `vars.X` a template reads is present.
    """
    directory_names = [agent.name for agent in cfg.agents.values() if agent.name]
    call = CompletedCall(
        pbx=max((pbx.name for pbx in cfg.pbx), key=len, default="pbx"),
        linkedid="1796413068.99999",
        direction=Direction.INBOUND,
        customer_number="+999999999999999",
        customer_name=("\U0001f600" + _PLACEHOLDER * 30)[: cfg.max_customer_name],
        presentation_restricted=False,
        did="9" * 15,
        queue=_PLACEHOLDER[:32],
        answered=True,
        disposition=Disposition.ANSWERED,
        queue_abandoned=False,
        agent_id=_PLACEHOLDER[:16],
        agent_name=max(directory_names, key=len, default=_PLACEHOLDER[:32]),
        agents_involved=(),
        talk_seconds=99999,
        wait_seconds=99999,
        variables={
            name: _PLACEHOLDER
            for name in referenced_vars(spec.text for spec in cfg.templates.values())
        },
        transferred=False,
        started_at=1796413068.0,
        ended_at=1796513067.0,
        end_reason=EndReason.LINKEDID_END,
        linkedid_end_seen=True,
    )
    return call_context(call, cfg, "+999999999999999")
