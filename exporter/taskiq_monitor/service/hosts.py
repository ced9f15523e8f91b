"""Which names the exporter answers to: the ``Host`` check (DNS rebinding) and the live feed's ``Origin`` check.

DNS rebinding: a page on ``attacker.example`` re-resolves its own name to ``127.0.0.1`` and then reads the
exporter from the victim's browser — same-origin as far as the browser knows, so no cookie or CORS rule stops it.
Its requests still say ``Host: attacker.example``, and that is what :class:`HostCheck` refuses. A request that
arrives on a loopback address (every request, when the exporter binds ``127.0.0.1``, the default) is answered only
when its ``Host`` is

* ``localhost`` or an IP address (any port): a rebinding page can only reach the exporter under a DNS name of its
  own, so literal addresses are safe, and Prometheus scrapes by IP (``127.0.0.1:9808``, a pod's address) keep
  working; or
* one of ``TASKIQ_MONITOR_ALLOWED_HOSTS`` (a reverse proxy's name; ``*`` turns the check off).

A request that arrives on any other address is answered whatever its ``Host``, unless ``ALLOWED_HOSTS`` is set:
then the same rule applies. ``/healthz`` is always answered (probes name the host as they like and it reveals
nothing). A refused request gets 400 with a body naming the setting; a refused WebSocket handshake gets 403.

Cross-site WebSocket hijacking: browsers let any page open a WebSocket anywhere, with the cookies of the target
site when it is same-site (another port of ``localhost``, a sibling subdomain). They always send ``Origin``, which
:func:`origin_allowed` checks: the live feed's handshake is refused (HTTP 403) unless the origin's host[:port] is
the request's ``Host`` (the exporter's own page) or its host name is listed in ``ALLOWED_HOSTS`` (``*`` does not
count here: a page is allowed by name only). Clients other than browsers (``taskiq-monitor tail``, Python
scripts) send no ``Origin`` and are not affected.

Why the connection's local address and not the bind setting: it is what the server really exposes (an exporter
bound to ``0.0.0.0`` is reached through loopback by a browser on the same host, which is the rebinding target),
and it holds for an app created with :func:`~taskiq_monitor.service.app.create_app` and served by another server.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

SETTING = "TASKIQ_MONITOR_ALLOWED_HOSTS"
ANY = "*"
ALWAYS_OPEN = frozenset({"/healthz"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (``[v6]:port`` too) as (lower-case name, port), or None when it is not one."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
    elif value.count(":") > 1:  # a bare IPv6 address: no port
        name, rest = value, ""
    else:
        name, sep, port_text = value.partition(":")
        rest = sep + port_text
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or int(rest[1:]) > 65535:
            return None
        port = int(rest[1:])
    name = name.lower().rstrip(".")  # "localhost." names the same host
    return (name, port) if name else None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports 127.0.0.1 as ::ffff:127.0.0.1
    return ip.is_loopback


def host_allowed(allowed: tuple[str, ...], host: str | None, on_loopback: bool) -> bool:
    """Whether a request with this ``Host`` header, arriving on a loopback address or not, is answered."""
    if ANY in allowed or (not on_loopback and not allowed) or host is None:
        return True  # no Host at all: HTTP/1.0, never a browser (the rebinding page's requests always carry one)
    parsed = split_host(host)
    if parsed is None:
        return False
    name = parsed[0]
    return name == "localhost" or is_ip(name) or name in allowed


def origin_allowed(allowed: tuple[str, ...], origin: str | None, host: str | None) -> bool:
    """Whether a WebSocket handshake with this ``Origin`` may open the feed: no ``Origin`` (not a browser), the
    exporter's own page (its host[:port] is the ``Host``), or a page whose host name is listed in ``allowed``."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        name, port = (parts.hostname or "").rstrip("."), parts.port
    except ValueError:  # a port out of range, a bad IPv6 literal
        return False
    if not name or parts.scheme not in _DEFAULT_PORTS:  # "null" (a sandboxed frame, a file:// page)
        return False
    if name in allowed:
        return True
    target = split_host(host) if host is not None else None
    if target is None:
        return False
    default = _DEFAULT_PORTS[parts.scheme]
    return (name, port or default) == (target[0], target[1] or default)


class HostCheck:
    """ASGI middleware: requests whose ``Host`` is not one of the exporter's names (:func:`host_allowed`) get 400
    (a WebSocket handshake: 403), before any route runs."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in ALWAYS_OPEN:
            await self.app(scope, receive, send)
            return
        server = scope.get("server")  # (local address, port) of the connection; None under some servers
        on_loopback = server is not None and is_loopback(str(server[0]))
        host = _header(scope, b"host")
        if host_allowed(self.allowed, host, on_loopback):
            await self.app(scope, receive, send)
            return
        logger.info("taskiq-monitor: refused a request for Host %r (not in %s)", (host or "")[:100], SETTING)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": ""})  # before accept: HTTP 403
            return
        message = (
            f"Host {(host or '')[:100]!r} is not a name of this exporter (DNS rebinding protection); to serve it, "
            f"add its host name to {SETTING} (comma-separated, '*' = any)"
        )
        body = json.dumps({"detail": {"error": "host_not_allowed", "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
