"""Tokens, their roles, and session cookies: the pure part of authentication (no aiohttp).

A session cookie is `expires.nonce.role.mac`, where mac is an HMAC-SHA256 keyed by the token of
the rest: it needs no server-side state, holds across API processes and restarts, and stops
working when its token is removed from the configuration (or its role changes).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

from asynctask.core.config import ApiConfig

SESSION_SECONDS: Final = 12 * 3600
ADMIN: Final = "admin"
READ: Final = "read"
_MAC_CONTEXT: Final = "asynctask session v1"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: their role, how they showed it (bearer, cookie, or open: no tokens set)."""

    role: str
    via: str
    expires: int | None = None  # a session's end, in Unix seconds


OPEN: Final = Identity(ADMIN, "open")


class Tokens:
    """The configured tokens and their roles; checks bearer tokens and session cookies."""

    def __init__(self, api: ApiConfig) -> None:
        read = set(api.read_tokens)
        self.roles = [(t.encode(), READ if t in read else ADMIN) for t in api.tokens]
        self.required = bool(self.roles)

    def role_of(self, presented: bytes) -> str | None:
        """The role of a presented token, or None; compares against every token, always."""
        found = None
        for token, role in self.roles:
            if hmac.compare_digest(presented, token):
                found = role
        return found

    def issue(self, presented: bytes, now: float | None = None) -> tuple[str, Identity] | None:
        """A session cookie's value for a valid token, and who it makes the bearer of it."""
        role = self.role_of(presented)
        if role is None:
            return None
        expires = int(now if now is not None else time.time()) + SESSION_SECONDS
        nonce = secrets.token_urlsafe(12)
        value = f"{expires}.{nonce}.{role}.{_mac(presented, expires, nonce, role)}"
        return value, Identity(role, "cookie", expires)

    def session(self, value: str, now: float | None = None) -> Identity | None:
        """Who a session cookie stands for, or None (forged, expired, or its token removed)."""
        parts = value.split(".")
        if len(parts) != 4 or not parts[0].isdigit():
            return None
        expires, nonce, role, mac = int(parts[0]), parts[1], parts[2], parts[3]
        if expires <= (now if now is not None else time.time()):
            return None
        valid = False
        for token, token_role in self.roles:
            expected = _mac(token, expires, nonce, token_role)
            valid |= hmac.compare_digest(mac.encode(), expected.encode()) and role == token_role
        return Identity(role, "cookie", expires) if valid else None


def _mac(token: bytes, expires: int, nonce: str, role: str) -> str:
    message = f"{_MAC_CONTEXT}|{expires}|{nonce}|{role}".encode()
    return hmac.new(token, message, hashlib.sha256).hexdigest()
