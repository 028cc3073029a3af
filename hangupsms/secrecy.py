"""The configuration's secrets: their values (kept out of logs) and where the file spells them out.

Secrets are the AMI `secret`s, Twilio `auth_token`s, and in http gateways the header, form,
json and query values whose name says credential (`Authorization`, `api_key`, `token`…) and
a password in the URL.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from hangupsms.settings import Config, JsonTemplate

_SECRET_NAME = re.compile(r"auth|key|token|secret|passw|signature|credential", re.IGNORECASE)
MIN_SECRET = 4  # shorter values would mask ordinary words in the logs


def secret_values(cfg: Config) -> set[str]:
    """Every secret value of `cfg` (as used, `${VAR}` resolved), for the log redactor."""
    found = {pbx.secret for pbx in cfg.pbx}
    for provider in cfg.providers.values():
        found.add(provider.auth_token)
        fields: dict[str, JsonTemplate] = {**provider.headers, **provider.query,
                                           **(provider.form or {})}
        found.update(_named(fields))
        found.update(_named(provider.json_ or {}))
        found.update(_in_url(provider.url))
        found.update(_in_url(provider.api_url))
    # "Bearer abc…": the token alone can leak too (an error quoting only it).
    found |= {value.split()[-1] for value in found if " " in value.strip()}
    return {value for value in found if len(value) >= MIN_SECRET}


def _named(fields: Mapping[str, Any]) -> Iterator[str]:
    for name, value in fields.items():
        if isinstance(value, Mapping):
            yield from _named(value)
        elif isinstance(value, str) and _SECRET_NAME.search(name):
            yield value


def _in_url(url: str) -> Iterator[str]:
    if not url:
        return
    parts = urlsplit(url)
    if parts.password:
        yield parts.password
    yield from (value for name, value in parse_qsl(parts.query) if _SECRET_NAME.search(name))


def literal_secrets(text: str) -> list[str]:
    """Key paths of the secrets `text` (a valid configuration) writes out rather than `${VAR}`."""
    data = yaml.safe_load(text)
    paths: list[str] = []
    for index, pbx in enumerate(data.get("pbx") or []):
        if _literal(pbx.get("secret")):
            paths.append(f"pbx[{index}].secret")
    for name, provider in (data.get("providers") or {}).items():
        where = f"providers.{name}"
        if _literal(provider.get("auth_token")):
            paths.append(f"{where}.auth_token")
        for key in ("headers", "form", "query", "json"):
            paths += [f"{where}.{key}.{p}" for p in _literal_named(provider.get(key) or {})]
        for key in ("url", "api_url"):
            if any(_literal(value) for value in _in_url(str(provider.get(key) or ""))):
                paths.append(f"{where}.{key}")
    return paths


def _literal(value: object) -> bool:
    if value is None:
        return False
    return "${" not in str(value).replace("$${", "")


def _literal_named(fields: Mapping[str, Any]) -> Iterator[str]:
    for name, value in fields.items():
        if isinstance(value, Mapping):
            yield from (f"{name}.{inner}" for inner in _literal_named(value))
        elif _SECRET_NAME.search(str(name)) and _literal(value):
            yield str(name)


def readers_besides_owner(path: Path) -> str:
    """Who else may read `path`: "" (nobody), "its group", "everyone" or both."""
    mode = path.stat().st_mode
    who = [name for bit, name in ((stat.S_IRGRP, "its group"), (stat.S_IROTH, "everyone"))
           if mode & bit]
    return " and ".join(who)


def exposure_warning(path: Path) -> str | None:
    """A warning when `path` spells out secrets and others may read it; None otherwise."""
    readers = readers_besides_owner(path)
    if not readers:
        return None
    paths = literal_secrets(path.read_text(encoding="utf-8"))
    if not paths:
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    return (f"{path} is readable by {readers} (mode {mode:04o}) and holds secrets written "
            f"out ({', '.join(paths)}): write them as ${{VAR}} (from the environment or "
            f"systemd LoadCredential=) or chmod go-rwx {path}")
