"""The `web:` section: defaults, errors with key path and line, and what it turns on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hangupsms.config import ConfigError, parse_config
from hangupsms.render import Renderer
from hangupsms.settings import STOP_KEYWORDS
from tests.lab import FIXTURES


def _text(web: object, **templates: str) -> str:
    raw = yaml.safe_load((FIXTURES / "reference.yaml").read_text(encoding="utf-8"))
    raw["templates"].update(templates)
    if web is not None:
        raw["web"] = web
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


def test_defaults_and_the_status_callback_it_gives_twilio(tmp_path: Path) -> None:
    cfg = parse_config(_text({"public_url": "https://pbx.example.com/sms/"}), base_dir=tmp_path)
    assert cfg.web is not None
    assert (cfg.web.host, cfg.web.port, cfg.web.public_url) == (
        "127.0.0.1", 8080, "https://pbx.example.com/sms")
    assert cfg.web.stop_keywords == STOP_KEYWORDS and "退订" in cfg.web.stop_keywords
    assert cfg.web.survey_window == 86400
    assert cfg.providers["twilio"].status_callback == "https://pbx.example.com/sms/twilio/status"
    off = parse_config(_text(None), base_dir=tmp_path)
    assert off.web is None and off.providers["twilio"].status_callback == ""


@pytest.mark.parametrize(("web", "templates", "message"), [
    ({"port": 8080}, {}, "web.public_url: missing (required)"),
    ({"public_url": "pbx.example.com"}, {}, "web.public_url: expected the absolute http(s) URL"),
    ({"public_url": "https://x.example", "survey_rules": ["thank"]}, {},
     "web.survey_rules[0]: unknown rule 'thank' (did you mean 'thanks'?)"),
    ({"public_url": "https://x.example", "start_keywords": ["stop"]}, {},
     "web.start_keywords: keyword(s) in two lists: stop"),
    ({"public_url": "https://x.example", "stop_keywords": []}, {},
     "web.stop_keywords: the list is empty"),
    ({"public_url": "https://x.example", "listen": 1}, {}, "web.listen: unknown key 'listen'"),
    (None, {"offer": "See {{ link('https://shop.example.com') }}"},
     "templates.offer: link() needs the web: section"),
])
def test_errors_name_the_key(
    tmp_path: Path, web: object, templates: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_text(web, **templates), "h.yaml", base_dir=tmp_path)
    assert message in str(caught.value)
    assert caught.value.line is not None


def test_link_renders_a_token_url_per_message_and_refuses_a_non_url(tmp_path: Path) -> None:
    cfg = parse_config(_text({"public_url": "https://x.example/s"},
                             offer="{{ link('https://shop.example.com/a') }}",
                             bad="{{ link('javascript:alert(1)') }}"), base_dir=tmp_path)
    renderer = Renderer.from_config(cfg)
    first, second = renderer.render("offer", {}), renderer.render("offer", {})
    assert first.text.startswith("https://x.example/s/r/") and first.text != second.text
    assert first.links[0].url == "https://shop.example.com/a"
    assert first.text.endswith(first.links[0].token) and len(first.links[0].token) == 22
    with pytest.raises(Exception, match="absolute http"):
        renderer.render("bad", {})
