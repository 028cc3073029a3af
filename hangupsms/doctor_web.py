"""`hangupsms doctor`: the `web:` listener's address and its public URL."""

from __future__ import annotations

import errno
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp

from hangupsms.amiaccess import Finding, Status
from hangupsms.settings import WebConfig

HEALTHZ_TIMEOUT = 3.0  # seconds: the daemon answers /healthz at once, or is not there


async def check_web(web: WebConfig) -> list[Finding]:
    return [await check_listener(web), check_public_url(web.public_url)]


async def check_listener(web: WebConfig) -> Finding:
    """The address can be bound, or it is bound by a running hangupsms (its /healthz answers)."""
    where = f"{web.host}:{web.port}"
    problem = _bind(web.host, web.port)
    if problem is None:
        return Finding(Status.OK, "listen", f"{where} can be bound")
    if problem.errno != errno.EADDRINUSE:
        return Finding(Status.MISSING, "listen", f"{where} cannot be bound: "
                       f"{problem.strerror or problem}")
    answer = await _healthz(web.host, web.port)
    if answer is None:
        return Finding(Status.MISSING, "listen", f"{where} is in use by another program (no "
                       "hangupsms /healthz answers there): choose another web.port")
    return Finding(Status.OK, "listen", f"{where} is the running daemon's: /healthz answers "
                   f"{answer}")


def _bind(host: str, port: int) -> OSError | None:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as exc:
        return exc
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            # As aiohttp binds it: a port in TIME_WAIT after a restart is no conflict.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen()
    except OSError as exc:
        return exc
    return None


async def _healthz(host: str, port: int) -> str | None:
    """`/healthz`'s status and verdict when a hangupsms answers on the address; else None."""
    wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}  # noqa: S104
    name = wildcard.get(host, f"[{host}]" if ":" in host else host)
    timeout = aiohttp.ClientTimeout(total=HEALTHZ_TIMEOUT)
    try:
        async with (aiohttp.ClientSession(timeout=timeout) as http,
                    http.get(f"http://{name}:{port}/healthz") as answer):
            body = await answer.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    if not isinstance(body, dict) or "ok" not in body:
        return None
    return f"{answer.status} ({'healthy' if body['ok'] else 'unhealthy: see its body'})"


def check_public_url(url: str) -> Finding:
    """https, and a host Twilio can reach (a name with a dot, not a private address)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https":
        return Finding(Status.WARN, "public_url", f"{url} is plain http: webhooks, replies "
                       "and tracked links cross the internet unencrypted",
                       fix=("web:", "  public_url: https://…   ; TLS at the reverse proxy"))
    try:
        private = not ipaddress.ip_address(host).is_global
    except ValueError:
        private = "." not in host or host.endswith((".local", ".localdomain", ".lan"))
    if private:
        return Finding(Status.WARN, "public_url", f"{url}: '{host}' is not a public name or "
                       "address; Twilio cannot call it and customers cannot open its links")
    return Finding(Status.OK, "public_url", f"{url} (https)")
