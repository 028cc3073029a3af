"""The `web:` section: the HTTP server for Twilio callbacks, replies and tracked links."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import urlsplit

from hangupsms.render import called_functions
from hangupsms.settings import Rule, TemplateConfig, WebConfig
from hangupsms.yamlnodes import At, NodeReader

_KEYWORD_LISTS = ("stop_keywords", "start_keywords", "help_keywords")
WEB_REQUIRED = ("public_url",)
WEB_BOUNDS = {"port": (0, 65535)}


def read_web(reader: NodeReader, at: At | None, rules: tuple[Rule, ...]) -> WebConfig | None:
    """The `web:` section, or None (off) when absent."""
    if at is None:
        return None
    allowed = tuple(f.name for f in dataclasses.fields(WebConfig))
    nodes = reader.mapping(at, allowed, WEB_REQUIRED)
    web = reader.fill(nodes, WebConfig, WEB_BOUNDS)
    parts = urlsplit(web.public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise reader.error(nodes["public_url"], "expected the absolute http(s) URL the reverse "
                           "proxy publishes, e.g. https://pbx.example.com/hangupsms")
    web = dataclasses.replace(web, public_url=web.public_url.rstrip("/"))
    for key in _KEYWORD_LISTS:
        if key in nodes and not any(word.strip() for word in getattr(web, key)):
            raise reader.error(nodes[key], "the list is empty")
    folded = [{w.strip().casefold() for w in getattr(web, key)} for key in _KEYWORD_LISTS]
    for index, key in enumerate(_KEYWORD_LISTS):
        clash = folded[index] & set().union(*(f for i, f in enumerate(folded) if i != index))
        if clash and key in nodes:
            raise reader.error(nodes[key], f"keyword(s) in two lists: {', '.join(sorted(clash))}")
    names = [rule.name for rule in rules]
    for item in reader.items(nodes["survey_rules"]) if "survey_rules" in nodes else ():
        reader.choice(item, names, "rule")
    return web


def check_template_functions(
    reader: NodeReader, templates_at: At, templates: Mapping[str, TemplateConfig],
    web: WebConfig | None,
) -> None:
    """A template that calls `link()` needs `web:` (its public URL builds the link)."""
    if web is not None:
        return
    for name, spec in templates.items():
        if "link" in called_functions(spec.text):
            raise reader.error(At(templates_at.node, templates_at.child(name), templates_at.line),
                               "link() needs the web: section (its public_url)")
