"""Who may reach the API without a token: where it may listen, and which Host names it answers.

Without tokens the API trusts whoever connects, so it listens only on loopback unless
`api.allow_anonymous` says otherwise; and since a web page in the user's browser can reach
loopback too, it answers only requests whose Host header names this machine or a configured name
(DNS rebinding: evil.example resolving to 127.0.0.1), and whose Origin, when a browser sends one,
is the API's own (a page of another site posting to it).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from asynctask.core.config import ApiConfig
from asynctask.core.errors import ConfigError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"
_WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 (recognised, never bound)


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or "" (all interfaces): assume reachable from elsewhere


def check_exposure(api: ApiConfig, host: str) -> None:
    """Refuse (ConfigError) to listen on a non-loopback address with no tokens, unless allowed."""
    if api.tokens or api.allow_anonymous or is_loopback(host):
        return
    raise ConfigError(
        f"api.host: {host!r} is not a loopback address and api.tokens is empty, so anyone who"
        " can reach it could create and cancel tasks (set ASYNCTASK_API_TOKENS, listen on"
        " 127.0.0.1, or set api.allow_anonymous: true behind a private network)"
    )


def allowed_hosts(api: ApiConfig) -> frozenset[str]:
    """The Host names answered without a token: `api.allowed_hosts`, else loopback + api.host."""
    if api.allowed_hosts:
        return frozenset(api.allowed_hosts)
    listen = api.host.strip("[]").lower()
    return frozenset(LOOPBACK_NAMES + (() if listen in _WILDCARDS else (listen,)))


def host_name(header: str) -> str:
    """The name part of a Host header: no port, no IPv6 brackets, no trailing dot, lower case."""
    name = header.strip().lower()
    if name.startswith("["):
        return name[1 : name.find("]")] if "]" in name else name
    head, colon, port = name.rpartition(":")
    if colon and port.isdigit() and ":" not in head:
        name = head
    return name.rstrip(".")


def same_origin(origin: str, host: str) -> bool:
    """True if a browser's Origin header names the server of this Host (host and port)."""
    try:
        page, target = urlsplit(origin), urlsplit("//" + host)
        default = 443 if page.scheme == "https" else 80
        same_port = (page.port or default) == (target.port or default)
    except ValueError:  # a port that is not a number
        return False
    return page.hostname is not None and page.hostname == target.hostname and same_port
