"""Simulated database outages on the shared server: block one test database, kill its sessions.

Restarting the server would break every other test running against it, so an outage is made by
refusing new connections to this database and terminating the ones it has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions

from tests.conftest import ADMIN_DSN


def _admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    return conn


def database_name(url: str) -> str:
    """The database a URL points at."""
    return str(psycopg2.extensions.parse_dsn(url)["dbname"])


def terminate_sessions(url: str) -> int:
    """Kill every session on the URL's database (as a server restart would); returns how many."""
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database_name(url),),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def allow_connections(url: str, allowed: bool) -> None:
    """Let new sessions in to the URL's database, or refuse them."""
    conn = _admin()
    try:
        name = psycopg2.extensions.quote_ident(database_name(url), conn)
        with conn.cursor() as cur:
            cur.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(allowed).lower()}")
    finally:
        conn.close()


@contextlib.contextmanager
def database_down(url: str) -> Iterator[None]:
    """While inside: no session on the database survives and no new one is accepted."""
    allow_connections(url, False)
    try:
        terminate_sessions(url)
        yield
    finally:
        allow_connections(url, True)
