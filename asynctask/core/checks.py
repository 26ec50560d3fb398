"""Value checkers for the configuration: each returns the converted value or raises ConfigError.

Every message names the key (or the variable it came from), the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import psycopg2
import psycopg2.extensions
import yaml

from asynctask.core.connections import redact
from asynctask.core.errors import ConfigError

MAX_INT32 = 2_147_483_647
# admin: everything; read: every GET, no change (403).
TOKEN_ROLES: Final = ("admin", "read")
_TOKENS = "a list of non-empty strings (admin tokens) or {token: ..., role: admin|read}"
Check = Callable[[str, Any], Any]


def fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}: {value!r} is not allowed ({allowed})")


def integer(low: int, high: int = MAX_INT32, what: str = "") -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise fail(key, value, what or f"an integer from {low} to {high}")
        return value

    return check


def number(low: float, high: float = 10**9) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
            raise fail(key, value, f"a number greater than {low:g} and at most {high:g}")
        return float(value)

    return check


def days(key: str, value: Any) -> float:
    """A retention in days; fractions let a test or a soak see rows pruned within minutes."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 36_500:
        raise fail(key, value, "days from 0 to 36500, fractions allowed; 0 keeps them forever")
    return float(value)


def optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda key, value: None if value is None else check(key, value)


def choice(options: tuple[str, ...], upper: bool = False) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        text = value.upper() if upper and isinstance(value, str) else value
        if text not in options:
            raise fail(key, value, "one of " + ", ".join(options))
        return str(text)

    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(key, value, "true or false")
    return value


def text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise fail(key, value, "a non-empty string")
    return value


def tokens(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """API tokens as (token, role) pairs: a plain string is an admin token, `{token, role}` names
    its role (see TOKEN_ROLES); from the environment, comma-separated strings or a YAML list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                # Never echo the value: it holds secrets.
                raise ConfigError(
                    f"{key}: not a YAML list of tokens (it starts with '[')"
                ) from None
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str | dict) and v for v in value):
        raise ConfigError(f"{key}: {masked(value)} is not allowed ({_TOKENS})")
    return tuple(_token(f"{key}.{n}", entry) for n, entry in enumerate(value))


def _token(key: str, entry: str | dict[str, Any]) -> tuple[str, str]:
    if isinstance(entry, str):
        return entry, "admin"
    # Never echo the entry: it holds a secret.
    if not isinstance(entry.get("token"), str) or not entry["token"]:
        raise ConfigError(f"{key}.token: missing or empty (a non-empty string)")
    unknown = set(entry) - {"token", "role"}
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown key (allowed: token, role)")
    role = entry.get("role", "admin")
    if role not in TOKEN_ROLES:
        raise fail(f"{key}.role", role, "one of " + ", ".join(TOKEN_ROLES))
    return entry["token"], role


def masked(value: Any) -> str:
    """A secret's shape without its content: ['***', int] for ['s3cret', 42]."""
    if isinstance(value, list):
        return "[" + ", ".join(masked(item) for item in value) + "]"
    if isinstance(value, str) and value:
        return "'***'"
    return "''" if value == "" else type(value).__name__


def host_names(key: str, value: Any) -> tuple[str, ...]:
    """Host names for the Host check: a list, or comma-separated text; lower case, no brackets."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise fail(key, value, "a list of host names such as localhost or tasks.example.com")
    return tuple(v.strip().strip("[]").rstrip(".").lower() for v in value)


_URL_EXAMPLE = "postgresql://user:password@host:5432/dbname"


def database_url(key: str, value: Any) -> str:
    """A libpq connection string: a postgresql:// URL, or key=value settings (host=... dbname=...).

    Checked at load, so a wrong one stops every command with one line instead of a driver error.
    """
    url = text(key, value)
    why = _url_problem(url)
    if why is not None:
        raise fail(key, redact(url), f"a PostgreSQL URL such as {_URL_EXAMPLE}; {why}")
    return url


def _url_problem(url: str) -> str | None:
    scheme, separator, _ = url.partition("://")
    if separator and scheme not in ("postgresql", "postgres"):
        if scheme.startswith(("postgresql+", "postgres+")):
            driver = scheme.partition("+")[2]
            return f"{scheme}:// is SQLAlchemy's form: drop the +{driver}"
        return f"the scheme {scheme}:// is not postgresql:// or postgres://"
    try:
        settings = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as exc:
        if not separator:
            return "it is neither a URL nor libpq's key=value settings"
        return str(exc).strip().splitlines()[0].removeprefix("invalid dsn: ")
    for port in settings.get("port", "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"port {port!r} is not a TCP port from 1 to 65535"
    return None
