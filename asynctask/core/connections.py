"""Connection plumbing: opening connections and pools, running catalogue statements, errors.

Driver errors that mean "the database is not there" become DatabaseUnavailable here, at the
boundary. Hot statements run as prepared statements, PREPAREd once per connection on first use:
that saves parsing (and, once PostgreSQL settles on a generic plan, planning) on every claim and
create. A connection opened with `prepared_statements=False` binds every statement client-side
instead, which is what a transaction-mode pooler (PgBouncer) needs. `ping` and
`connection_limits` ask the server about connections themselves: does it answer, how many it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions

from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.sql import QUERIES, Query, inline_params

_T = TypeVar("_T")
# libpq settings for every connection, unless the URL sets its own: a peer that vanished (a host cut
# off, a server's machine gone) is noticed within seconds, not after minutes of TCP retransmission
# backoff. Keepalives cover an idle connection (a leader waiting for a NOTIFY); tcp_user_timeout
# (ms) covers one whose sent data goes unacknowledged.
TCP_SETTINGS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}


# A password in a URL's user part (scheme://user:PASSWORD@), or as libpq's `password=` setting, in
# key=value form (quoted or not) or in a URL's query; schema.py turns a URL into key=value form.
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*:)[^@/]*@", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")
_SETTING_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def redact(url: str) -> str:
    """The connection string (URL or key=value) with its password as ***, for messages and logs."""
    if "://" in url:
        return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))
    return _SETTING_PASSWORD.sub(r"\1***", url)


def with_tcp_settings(url: str) -> dict[str, str]:
    """TCP_SETTINGS that `url` does not set itself, as keyword arguments for the driver."""
    try:
        given = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        return {}  # let connecting report the bad URL
    return {key: value for key, value in TCP_SETTINGS.items() if key not in given}


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def translate_errors(url: str | None = None) -> Iterator[None]:
    """Turn driver-level "cannot talk to the server" errors into DatabaseUnavailable."""
    # Every query passes through here: the URL is redacted (regular expressions) only on failure.
    try:
        yield
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        where = _where(url)
        raise DatabaseUnavailable(f"database{where} is unavailable: {first_line(exc)}") from exc
    except TimeoutError as exc:
        raise DatabaseUnavailable(f"database{_where(url)} did not answer in time") from exc


def _where(url: str | None) -> str:
    return f" at {redact(url)}" if url else ""


class _Connection(psycopg2.extensions.connection):
    """A psycopg2 connection that knows whether to PREPARE and what it has PREPAREd."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.use_prepared = True
        self.prepared: set[str] = set()


async def connect(
    url: str, timeout: float = 5.0, *, prepared_statements: bool = True, **kwargs: Any
) -> aiopg.Connection:
    """One dedicated connection (a worker's, or a one-shot command's)."""
    with translate_errors(url):
        conn = await aiopg.connect(
            url,
            timeout=timeout,
            connection_factory=_Connection,
            **{**with_tcp_settings(url), **kwargs},
        )
    conn.raw.use_prepared = prepared_statements
    return conn


async def with_connection(
    url: str, timeout: float, operation: Callable[[aiopg.Connection], Awaitable[_T]]
) -> _T:
    """Open one connection, run `operation` on it (driver errors translated), close it.

    For the one-shot commands (migrate, stats, the connection-budget check).
    """
    conn = await connect(url, timeout=timeout, prepared_statements=False)
    try:
        with translate_errors(url):
            return await operation(conn)
    finally:
        conn.close()


async def create_pool(
    url: str, maxsize: int, timeout: float, *, prepared_statements: bool = True, **kwargs: Any
) -> aiopg.Pool:
    """The API's pool; `timeout` bounds every query so no request can hang on a dead server."""

    async def configure(conn: aiopg.Connection) -> None:
        conn.raw.use_prepared = prepared_statements

    with translate_errors(url):
        return await aiopg.create_pool(
            url,
            minsize=1,
            maxsize=maxsize,
            timeout=timeout,
            connection_factory=_Connection,
            on_connect=configure,
            **{**with_tcp_settings(url), **kwargs},
        )


@contextlib.asynccontextmanager
async def acquire(pool: aiopg.Pool, timeout: float) -> AsyncIterator[aiopg.Connection]:
    """A pooled connection, or DatabaseUnavailable if none comes within `timeout` seconds."""
    # asyncio.timeout, not wait_for: no extra task (and loop turn) per request.
    with translate_errors():
        async with asyncio.timeout(timeout):
            conn = await pool.acquire()
    try:
        with translate_errors():
            yield conn
    finally:
        pool.release(conn)


async def rows(conn: aiopg.Connection, query: Query, *params: Any) -> list[dict[str, Any]]:
    """Run a catalogue statement; its rows as dicts."""
    raw = conn.raw
    if not (query.prepared and getattr(raw, "use_prepared", False)):
        return await _fetch(conn, *_bound(query, params))
    # Our connections remember what they prepared, so no call fails on purpose (an SQL error
    # would also end aiopg's notification queue on a worker's connection). A statement dropped
    # behind our back (DISCARD ALL, DEALLOCATE) fails once, is prepared again, and is repeated.
    if query.name not in raw.prepared:
        await execute_text(conn, query.prepare)
        raw.prepared.add(query.name)
    try:
        return await _fetch(conn, query.execute, params)
    except psycopg2.errors.InvalidSqlStatementName:
        await execute_text(conn, query.prepare)
        return await _fetch(conn, query.execute, params)


async def execute(conn: aiopg.Connection, query: Query, *params: Any) -> int:
    """Run a catalogue statement that returns no rows; how many rows it touched."""
    async with conn.cursor() as cur:
        await cur.execute(*_bound(query, params))
        return int(cur.rowcount)


async def execute_text(conn: aiopg.Connection, text: str) -> None:
    """Run a statement that is not in the catalogue: DDL, PREPARE, LISTEN (no parameters)."""
    async with conn.cursor() as cur:
        await cur.execute(text)


async def connection_limits(conn: aiopg.Connection) -> tuple[int, int]:
    """(max_connections, superuser_reserved_connections) of the server."""
    row = (await rows(conn, QUERIES["connection_limits"]))[0]
    return row["max"], row["reserved"]


async def ping(conn: aiopg.Connection) -> None:
    """One round trip; raises if the server does not answer."""
    await rows(conn, QUERIES["ping"])


def _bound(query: Query, params: tuple[Any, ...]) -> tuple[str, dict[str, Any] | None]:
    # Without values psycopg2 does no substitution, so the text goes as written (no %% doubling).
    return (query.inline, inline_params(params)) if params else (query.text, None)


async def _fetch(conn: aiopg.Connection, text: str, params: Any) -> list[dict[str, Any]]:
    # Plain tuples zipped into dicts, not RealDictCursor: its rows are built one item at a time
    # in Python and were then copied into dicts, ~3 us a row on a claim of 100 (bench/README.md).
    async with conn.cursor() as cur:
        await cur.execute(text, params)
        if not cur.description:
            return []
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
