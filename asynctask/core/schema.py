"""The schema: creating the database if it is missing, and applying schema.sql (idempotent)."""

from __future__ import annotations

from importlib import resources

import aiopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions

from asynctask.core.connections import connect, execute_text, redact, translate_errors
from asynctask.core.errors import DatabaseError, DatabaseUnavailable

# Arbitrary but fixed: serialises concurrent `asynctask migrate` runs (several containers at once).
_MIGRATE_LOCK = 0x61737963


def schema_sql() -> str:
    """The DDL shipped inside the package (the top-level schema.sql)."""
    return resources.files("asynctask.core").joinpath("schema.sql").read_text(encoding="utf-8")


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True if it was created."""
    params = psycopg2.extensions.parse_dsn(url)
    name = str(params.get("dbname") or params.get("user"))
    try:
        conn = await connect(url)
    except DatabaseUnavailable as exc:
        cause = exc.__cause__
        if not isinstance(cause, psycopg2.OperationalError) or "does not exist" not in str(cause):
            raise
    else:
        conn.close()
        return False
    admin = await connect(psycopg2.extensions.make_dsn(url, dbname="postgres"))
    try:
        with translate_errors(url):
            async with admin.cursor() as cur:
                # A database name cannot be a parameter: quote_ident makes it one identifier.
                quoted = psycopg2.extensions.quote_ident(name, admin.raw)
                await cur.execute(f"CREATE DATABASE {quoted}")
    except psycopg2.errors.InsufficientPrivilege:
        raise DatabaseError(
            f"database {name!r} at {redact(url)} does not exist and this role may not create it;"
            " create it, or point DATABASE_URL at an existing one"
        ) from None
    except psycopg2.errors.DuplicateDatabase:
        return False  # another migrate created it meanwhile
    finally:
        admin.close()
    return True


async def apply_schema(conn: aiopg.Connection) -> None:
    """Run schema.sql under an advisory lock; safe to repeat and to run concurrently.

    One query string, so one transaction: the lock is released at its commit, and lock, DDL and
    release share one server session also behind a pooler in transaction mode (a session lock
    taken and released by two statements there can land on two sessions and stay held).
    """
    await execute_text(
        conn,
        f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK});"
        " SET LOCAL client_min_messages = warning; " + schema_sql(),
    )
