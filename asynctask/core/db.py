"""Every SQL statement asynctask runs, each behind a function named by its intent.

Callers pass an aiopg connection (the API acquires one from its pool; a worker owns two) and never
see SQL text. Driver errors that mean "the database is not there" become DatabaseUnavailable here,
at the boundary. This module must not import aiohttp: the workers use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from asynctask.core.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidTransition,
    TaskNotFound,
)
from asynctask.core.models import CANCELLABLE_STATES, PRIORITY_NAMES, RETRYABLE_STATES

# The channel of a row's priority, computed in SQL so a NOTIFY can ride in the same statement.
_CHANNEL = "'tasks_' || (ARRAY['high', 'normal', 'low'])[priority]"
_TASK_COLUMNS = (
    "id, type, priority, state, attempts, max_attempts, data, scheduled_at, inserted_at,"
    " updated_at, started_at, finished_at, last_error"
)
# Arbitrary but fixed: serialises concurrent `asynctask migrate` runs (several containers at once).
_MIGRATE_LOCK = 0x61737963


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def translate_errors(url: str | None = None) -> Iterator[None]:
    """Turn driver-level "cannot talk to the server" errors into DatabaseUnavailable."""
    where = f" at {redact(url)}" if url else ""
    try:
        yield
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"database{where} is unavailable: {first_line}") from exc
    except TimeoutError as exc:
        raise DatabaseUnavailable(f"database{where} did not answer in time") from exc


class _Connection(psycopg2.extensions.connection):
    """A psycopg2 connection that remembers which statements it has PREPAREd (_prepared_rows)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()


async def connect(url: str, timeout: float = 5.0, **kwargs: Any) -> aiopg.Connection:
    """One dedicated connection (a worker's, or a one-shot command's)."""
    with translate_errors(url):
        return await aiopg.connect(url, timeout=timeout, connection_factory=_Connection, **kwargs)


_T = TypeVar("_T")


async def with_connection(
    url: str, timeout: float, operation: Callable[[aiopg.Connection], Awaitable[_T]]
) -> _T:
    """Open one connection, run `operation` on it (driver errors translated), close it.

    For the one-shot commands (migrate, stats, the connection-budget check).
    """
    conn = await connect(url, timeout=timeout)
    try:
        with translate_errors(url):
            return await operation(conn)
    finally:
        conn.close()


async def create_pool(url: str, maxsize: int, timeout: float) -> aiopg.Pool:
    """The API's pool; `timeout` bounds every query so no request can hang on a dead server."""
    with translate_errors(url):
        return await aiopg.create_pool(
            url, minsize=1, maxsize=maxsize, timeout=timeout, connection_factory=_Connection
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


async def _rows(conn: aiopg.Connection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    async with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        await cur.execute(sql, params)
        return [dict(row) for row in await cur.fetchall()] if cur.description else []


class _Statement:
    """A hot statement with $n parameters, run as a prepared statement (see _prepared_rows).

    Its PREPARE and EXECUTE texts are built once, at import, not on every claim or create.
    """

    def __init__(self, name: str, parameter_types: tuple[str, ...], sql: str) -> None:
        self.name = name
        self.prepare = f"PREPARE {name} ({', '.join(parameter_types)}) AS {sql}"
        self.execute = f"EXECUTE {name} ({', '.join(['%s'] * len(parameter_types))})"


async def _prepared_rows(
    conn: aiopg.Connection, statement: _Statement, params: tuple[Any, ...]
) -> list[dict[str, Any]]:
    """Run `statement`, prepared once per connection on first use; its rows as dicts.

    Saves parsing (and, once PostgreSQL settles on a generic plan, planning) a hot statement on
    every call: an idle claim or create takes 0.3-0.4 ms less. Our connections remember what they
    prepared, so no call fails on purpose: an SQL error would also end aiopg's notification queue
    on a worker's connection. A statement dropped behind our back (DISCARD ALL, DEALLOCATE) fails
    once, is prepared again, and the call is repeated.
    """
    prepared: set[str] | None = getattr(conn.raw, "prepared", None)
    if prepared is not None and statement.name not in prepared:
        await _execute(conn, statement.prepare)
        prepared.add(statement.name)
    try:
        return await _rows(conn, statement.execute, params)
    except psycopg2.errors.InvalidSqlStatementName:
        await _execute(conn, statement.prepare)
        return await _rows(conn, statement.execute, params)


async def _execute(conn: aiopg.Connection, sql: str, params: Any = None) -> int:
    async with conn.cursor() as cur:
        await cur.execute(sql, params)
        return int(cur.rowcount)


def _api_task(row: dict[str, Any]) -> dict[str, Any]:
    row["priority"] = PRIORITY_NAMES[row["priority"]]
    return row


# --- schema -------------------------------------------------------------------------------------


def schema_sql() -> str:
    """The DDL shipped inside the package (the top-level schema.sql)."""
    return resources.files("asynctask.core").joinpath("schema.sql").read_text(encoding="utf-8")


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True if it was created."""
    params = psycopg2.extensions.parse_dsn(url)
    name = params.get("dbname") or params.get("user")
    try:
        conn = await connect(url)
    except DatabaseUnavailable as exc:
        if not isinstance(exc.__cause__, psycopg2.OperationalError) or "does not exist" not in str(
            exc.__cause__
        ):
            raise
    else:
        conn.close()
        return False
    admin_url = psycopg2.extensions.make_dsn(url, dbname="postgres")
    admin = await connect(admin_url)
    try:
        with translate_errors(url):
            quoted = psycopg2.extensions.quote_ident(str(name), admin.raw)
            await _execute(admin, f"CREATE DATABASE {quoted}")
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
    """Run schema.sql under an advisory lock; safe to repeat and to run concurrently."""
    await _execute(conn, "SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
    try:
        await _execute(conn, "SET client_min_messages = warning; " + schema_sql())
    finally:
        await _execute(conn, "SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))


async def connection_limits(conn: aiopg.Connection) -> tuple[int, int]:
    """(max_connections, superuser_reserved_connections) of the server."""
    rows = await _rows(
        conn,
        "SELECT current_setting('max_connections')::int AS max,"
        " current_setting('superuser_reserved_connections')::int AS reserved",
    )
    return rows[0]["max"], rows[0]["reserved"]


async def ping(conn: aiopg.Connection) -> None:
    """One round trip; raises if the server does not answer."""
    await _execute(conn, "SELECT 1")


# --- API: create, read, list, cancel, retry ------------------------------------------------------


async def insert_task(
    conn: aiopg.Connection, type_: str, priority: int, max_attempts: int, data: dict[str, Any]
) -> dict[str, Any]:
    """Insert one task and NOTIFY its priority's channel with its id (see insert_task_rows)."""
    rows = await insert_task_rows(conn, [(type_, priority, max_attempts, json.dumps(data))])
    return rows[0]


async def insert_task_rows(
    conn: aiopg.Connection, tasks: Sequence[tuple[str, int, int, str]]
) -> list[dict[str, Any]]:
    """Insert tasks (type, priority, max_attempts, data as JSON text); the new rows in input order.

    One statement, one transaction, one NOTIFY per priority touched, delivered at commit (so a
    worker is never woken for a task it cannot see yet). The payload is the task's id when the
    statement created one task of that priority (an idle pool leader claims it alone, see
    workers/wakeup.py), else empty (wake the whole pool).
    """
    if len(tasks) == 1:
        # The idle API's case, on the wake-up's critical path: a VALUES insert costs an idle
        # server ~0.08 ms less than the unnest statement (bench/README.md).
        rows = await _prepared_rows(conn, _INSERT_ONE, tasks[0])
        del rows[0]["notified"]
    else:
        rows = await _prepared_rows(conn, _INSERT_ROWS, _columns(tasks))
    return [_api_task(row) for row in rows]


async def insert_tasks(
    conn: aiopg.Connection, tasks: Sequence[tuple[str, int, int, str]]
) -> list[int]:
    """As insert_task_rows, but only the ids (in input order): the batch route's answer."""
    rows = await _prepared_rows(conn, _INSERT_IDS, _columns(tasks))
    return [row["id"] for row in rows]


def _insert_sql(returning: str) -> str:
    # Identity values are handed out in insertion order, and rows are inserted in input order, so
    # ORDER BY id gives the input order back.
    return (
        "WITH input AS ("
        "  SELECT * FROM unnest($1, $2, $3, $4)"
        "    WITH ORDINALITY AS i(type, priority, max_attempts, data, n)),"
        " inserted AS ("
        "  INSERT INTO tasks (type, priority, max_attempts, data)"
        "  SELECT type, priority, max_attempts, data FROM input ORDER BY n"
        f"  RETURNING {returning}),"
        f" notified AS (SELECT pg_notify({_CHANNEL},"
        "    CASE WHEN count(*) = 1 THEN min(id)::text ELSE '' END)"
        "  FROM inserted GROUP BY priority)"
        f" SELECT {returning} FROM inserted, (SELECT count(*) FROM notified) AS n ORDER BY id"
    )


_INSERT_TYPES = ("text[]", "smallint[]", "int[]", "jsonb[]")
_INSERT_ROWS = _Statement("asynctask_insert_rows", _INSERT_TYPES, _insert_sql(_TASK_COLUMNS))
_INSERT_IDS = _Statement("asynctask_insert_ids", _INSERT_TYPES, _insert_sql("id, priority"))
_INSERT_ONE = _Statement(
    "asynctask_insert_one",
    ("text", "smallint", "int", "jsonb"),
    "INSERT INTO tasks (type, priority, max_attempts, data) VALUES ($1, $2, $3, $4)"
    f" RETURNING {_TASK_COLUMNS}, pg_notify({_CHANNEL}, id::text) AS notified",
)


def _columns(tasks: Sequence[tuple[str, int, int, str]]) -> tuple[str, str, str, str]:
    types, priorities, attempts, datas = zip(*tasks, strict=True)
    return _text_array(types), _int_array(priorities), _int_array(attempts), _text_array(datas)


# psycopg2 sends a list as ARRAY['a', 'b', ...]: with 10,000 elements per column that expression
# costs the server ~50 ms to parse and plan. A '{...}' literal goes through array_in in one pass,
# which halves the batch insert.
def _text_array(values: Sequence[str]) -> str:
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _int_array(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


async def get_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """One task as the API shows it; TaskNotFound if there is none."""
    rows = await _rows(conn, f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = %s", (task_id,))
    if not rows:
        raise TaskNotFound(f"task {task_id} does not exist")
    return _api_task(rows[0])


async def list_tasks(
    conn: aiopg.Connection,
    *,
    limit: int,
    state: str | None = None,
    priority: int | None = None,
    type_: str | None = None,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated: pass the last id seen as `before_id` for the next page."""
    where, params = [], []
    for clause, value in (
        ("state = %s", state),
        ("priority = %s", priority),
        ("type = %s", type_),
        ("id < %s", before_id),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    condition = " WHERE " + " AND ".join(where) if where else ""
    rows = await _rows(
        conn,
        f"SELECT {_TASK_COLUMNS} FROM tasks{condition} ORDER BY id DESC LIMIT %s",
        (*params, limit),
    )
    return [_api_task(row) for row in rows]


async def cancel_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """Cancel a task that has not started (available or retrying)."""
    rows = await _rows(
        conn,
        f"UPDATE tasks SET state = 'cancelled', finished_at = now(), updated_at = now()"
        f" WHERE id = %s AND state IN ('available', 'retrying') RETURNING {_TASK_COLUMNS}",
        (task_id,),
    )
    if not rows:
        current = await get_task(conn, task_id)
        raise InvalidTransition(task_id, current["state"], CANCELLABLE_STATES)
    return _api_task(rows[0])


async def retry_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """Put a failed or cancelled task back to available with a fresh attempt budget."""
    rows = await _rows(
        conn,
        f"UPDATE tasks SET state = 'available', attempts = 0, scheduled_at = now(),"
        f" finished_at = NULL, started_at = NULL, updated_at = now()"
        f" WHERE id = %s AND state IN ('failed', 'cancelled')"
        f" RETURNING {_TASK_COLUMNS}, pg_notify({_CHANNEL}, id::text) AS notified",
        (task_id,),
    )
    if not rows:
        current = await get_task(conn, task_id)
        raise InvalidTransition(task_id, current["state"], RETRYABLE_STATES)
    del rows[0]["notified"]
    return _api_task(rows[0])


# --- workers: claim, finish, lease, release, rescue ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the finishing UPDATE needs it."""

    task_id: int
    token: str
    state: str  # completed | retrying | failed
    delay_ms: int = 0
    error: str | None = None


# A claim commits asynchronously: it does not wait for the WAL flush (~0.5 ms idle, most of an
# idle claim), which sits between a NOTIFY and the handler starting. Losing a claim in a server
# crash loses no task: the row goes back to due, the worker's token-checked acknowledgement finds
# nothing, and the task runs again (at-least-once). The setting is local to the claim's own
# transaction, so acknowledgements on the same connection keep synchronous commit, and a later
# synchronous commit flushes the WAL up to and including every earlier claim.
_ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"


_CLAIM = _Statement(
    "asynctask_claim",
    ("smallint", "int", "text", "uuid", "float8"),
    "WITH due AS ("
    "  SELECT id FROM tasks"
    "  WHERE state IN ('available', 'retrying') AND priority = $1 AND scheduled_at <= now()"
    "  ORDER BY scheduled_at, id LIMIT $2"
    "  FOR UPDATE SKIP LOCKED)"
    " UPDATE tasks AS t SET state = 'running', attempts = t.attempts + 1,"
    "  locked_by = $3, lock_token = $4,"
    "  lease_expires_at = now() + $5 * interval '1 second',"
    "  started_at = now(), updated_at = now()"
    f" FROM due, {_ASYNC_COMMIT} WHERE t.id = due.id"
    " RETURNING t.id, t.type, t.attempts, t.max_attempts, t.data",
)


async def claim(
    conn: aiopg.Connection,
    *,
    priority: int,
    limit: int,
    locked_by: str,
    token: str,
    lease_seconds: float,
) -> list[dict[str, Any]]:
    """Claim up to `limit` due tasks of one priority, oldest first, bumping their attempts.

    The CTE is a fence: LIMIT applies to the locked rows, not to a re-planned join (Oban's
    `basic.ex` note). SKIP LOCKED lets any number of workers and supervisors claim side by side.
    The claim alone commits without waiting for its WAL flush (see _ASYNC_COMMIT).
    """
    rows = await _prepared_rows(conn, _CLAIM, (priority, limit, locked_by, token, lease_seconds))
    rows.sort(key=lambda row: row["id"])
    return rows


async def finish(conn: aiopg.Connection, outcomes: Sequence[Outcome]) -> int:
    """Record many attempts' outcomes in one statement; returns how many still held their claim.

    The token check makes a stale worker's write a no-op once its task was rescued.
    """
    if not outcomes:
        return 0
    return await _execute(
        conn,
        "UPDATE tasks AS t SET state = o.state,"
        "  scheduled_at = CASE WHEN o.state = 'retrying'"
        "    THEN now() + o.delay_ms * interval '1 millisecond' ELSE t.scheduled_at END,"
        "  finished_at = CASE WHEN o.state = 'retrying' THEN NULL ELSE now() END,"
        "  last_error = coalesce(o.error, t.last_error),"
        "  locked_by = NULL, lock_token = NULL, lease_expires_at = NULL, updated_at = now()"
        " FROM unnest(%s::bigint[], %s::uuid[], %s::text[], %s::int[], %s::text[])"
        "  AS o(id, token, state, delay_ms, error)"
        " WHERE t.id = o.id AND t.lock_token = o.token AND t.state = 'running'",
        (
            [o.task_id for o in outcomes],
            [o.token for o in outcomes],
            [o.state for o in outcomes],
            [o.delay_ms for o in outcomes],
            [o.error for o in outcomes],
        ),
    )


async def extend_leases(conn: aiopg.Connection, tokens: Sequence[str], lease_seconds: float) -> int:
    """Push the lease of every task still held under these claim tokens."""
    if not tokens:
        return 0
    return await _execute(
        conn,
        "UPDATE tasks SET lease_expires_at = now() + %s * interval '1 second'"
        " WHERE state = 'running' AND lock_token = ANY(%s::uuid[])",
        (lease_seconds, list(tokens)),
    )


# A claimed task that never started goes back as it was: the claim's attempt is not counted.
_HAND_BACK = (
    " attempts = t.attempts - 1,"
    " state = CASE WHEN t.attempts > 1 THEN 'retrying' ELSE 'available' END,"
    " started_at = NULL, locked_by = NULL, lock_token = NULL, lease_expires_at = NULL,"
    " updated_at = now()"
)


async def release_unstarted(conn: aiopg.Connection, task_ids: Sequence[int], token: str) -> int:
    """Give back claimed tasks that never started: the claim's attempt is not counted."""
    if not task_ids:
        return 0
    return await _execute(
        conn,
        "UPDATE tasks AS t SET" + _HAND_BACK + " WHERE id = ANY(%s) AND lock_token = %s"
        " AND state = 'running'",
        (list(task_ids), token),
    )


_GIVE_UP_OR_RETRY = (
    " state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'retrying' END,"
    " finished_at = CASE WHEN attempts >= max_attempts THEN now() END,"
    " scheduled_at = now() + %(delay_ms)s * interval '1 millisecond',"
    " locked_by = NULL, lock_token = NULL, lease_expires_at = NULL, updated_at = now()"
)


async def release_dead_worker(
    conn: aiopg.Connection,
    *,
    locked_by: str,
    running_task_id: int | None,
    reason: str,
    delay_ms: int,
) -> tuple[int, int]:
    """Release what a dead worker process held: (attempts failed, tasks handed back).

    The task it was running counts as a failed attempt (retrying, or failed once attempts are
    spent); the rest of its prefetched claim never started and goes back uncounted.
    """
    failed = 0
    if running_task_id is not None:
        failed = await _execute(
            conn,
            "UPDATE tasks SET last_error = %(reason)s,"
            + _GIVE_UP_OR_RETRY
            + " WHERE id = %(id)s AND state = 'running' AND locked_by = %(locked_by)s",
            {"reason": reason, "delay_ms": delay_ms, "id": running_task_id, "locked_by": locked_by},
        )
    handed_back = await _execute(
        conn,
        "UPDATE tasks AS t SET" + _HAND_BACK + " WHERE state = 'running' AND locked_by = %s",
        (locked_by,),
    )
    return failed, handed_back


async def complete_unacknowledged(
    conn: aiopg.Connection, locked_by: str, task_ids: Sequence[int]
) -> int:
    """Record completions a dead worker had finished but not yet written; returns how many."""
    if not task_ids:
        return 0
    return await _execute(
        conn,
        "UPDATE tasks SET state = 'completed', finished_at = now(), locked_by = NULL,"
        "  lock_token = NULL, lease_expires_at = NULL, updated_at = now()"
        " WHERE id = ANY(%s) AND locked_by = %s AND state = 'running'",
        (list(task_ids), locked_by),
    )


async def running_lockers(conn: aiopg.Connection, host_prefix: str) -> list[str]:
    """The distinct `locked_by` values of running tasks claimed on one host."""
    rows = await _rows(
        conn,
        "SELECT DISTINCT locked_by FROM tasks WHERE state = 'running' AND locked_by LIKE %s",
        (host_prefix.replace("%", r"\%").replace("_", r"\_") + "%",),
    )
    return [row["locked_by"] for row in rows]


def _release_held(held: str, reason: str) -> str:
    """One statement: of each gone locker's tasks, charge the lowest id, hand back the rest.

    A worker runs its claim in id order, so its lowest still-running id is the task it was on (or
    one it had finished but not yet written); the higher ones never started. Charging every held
    task would spend attempts of prefetched tasks that never ran. `held` selects (id, locked_by)
    and locks its rows, so a concurrent sweeper waits, then finds them gone.
    """
    return (
        f"WITH held AS ({held}),"
        " first AS (SELECT min(id) AS id FROM held GROUP BY locked_by),"
        f" charged AS (UPDATE tasks AS t SET last_error = {reason},"
        + _GIVE_UP_OR_RETRY
        + "   FROM first WHERE t.id = first.id AND t.state = 'running' RETURNING 1),"
        " back AS (UPDATE tasks AS t SET"
        + _HAND_BACK
        + "   FROM held WHERE t.id = held.id AND t.state = 'running'"
        "   AND held.id NOT IN (SELECT id FROM first) RETURNING 1)"
        " SELECT (SELECT count(*) FROM charged) + (SELECT count(*) FROM back)"
    )


async def release_orphans(
    conn: aiopg.Connection, lockers: Sequence[str], reason: str, delay_ms: int
) -> int:
    """Release the running tasks of processes known to be gone; returns how many."""
    if not lockers:
        return 0
    rows = await _rows(
        conn,
        _release_held(
            "SELECT id, locked_by FROM tasks WHERE state = 'running'"
            " AND locked_by = ANY(%(lockers)s) FOR UPDATE",
            "%(reason)s || ' (' || t.locked_by || ')'",
        ),
        {"reason": reason, "delay_ms": delay_ms, "lockers": list(lockers)},
    )
    return int(next(iter(rows[0].values())))


async def rescue_expired(conn: aiopg.Connection, delay_ms: int, limit: int = 1000) -> int:
    """Rescue running tasks whose lease ran out (their host died); returns how many."""
    rows = await _rows(
        conn,
        _release_held(
            "SELECT id, locked_by FROM tasks WHERE state = 'running'"
            " AND lease_expires_at < now() ORDER BY lease_expires_at LIMIT %(limit)s"
            " FOR UPDATE SKIP LOCKED",
            "'lease expired: worker ' || t.locked_by || ' stopped renewing its claim'",
        ),
        {"delay_ms": delay_ms, "limit": limit},
    )
    return int(next(iter(rows[0].values())))


async def listen(conn: aiopg.Connection, channel: str) -> None:
    """LISTEN on a channel name we built ourselves (tasks_<priority>)."""
    await _execute(conn, f"LISTEN {channel}")


# --- operations: stats and retention --------------------------------------------------------------


async def task_counts(conn: aiopg.Connection) -> list[dict[str, Any]]:
    """Per (priority, state): how many tasks, and how many finished in the last minute.

    One scan of the table; callers cache the answer (metrics scrapes, /api/stats).
    """
    rows = await _rows(
        conn,
        "SELECT priority, state, count(*) AS tasks,"
        "  count(*) FILTER (WHERE finished_at > now() - interval '1 minute') AS last_minute"
        " FROM tasks GROUP BY priority, state",
    )
    return [_api_task(row) for row in rows]


async def queue_lag(conn: aiopg.Connection) -> dict[str, float]:
    """Seconds since the oldest due task of each priority became due (0 when none is waiting)."""
    rows = await _rows(
        conn,
        "SELECT p.priority, coalesce(extract(epoch FROM now() - ("
        "   SELECT scheduled_at FROM tasks WHERE state IN ('available', 'retrying')"
        "   AND priority = p.priority AND scheduled_at <= now()"
        "   ORDER BY scheduled_at LIMIT 1)), 0)::float8 AS lag"
        " FROM (VALUES (1::smallint), (2::smallint), (3::smallint)) AS p(priority)",
    )
    return {PRIORITY_NAMES[row["priority"]]: row["lag"] for row in rows}


async def prune_finished(
    conn: aiopg.Connection, *, state: str, older_than_days: float, limit: int = 5000
) -> int:
    """Delete up to `limit` tasks of one finished state older than the cutoff; returns how many.

    No index on finished_at: it would cost every completion an extra index insert. Old finished
    rows sit in the table's first pages, so the LIMITed scan finds them quickly.
    """
    return await _execute(
        conn,
        "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE state = %s"
        "  AND finished_at < now() - %s * interval '1 day' LIMIT %s)",
        (state, older_than_days, limit),
    )


async def try_lock(conn: aiopg.Connection, key: int) -> bool:
    """Take a session advisory lock if free (one pruner across all supervisors)."""
    rows = await _rows(conn, "SELECT pg_try_advisory_lock(%s) AS locked", (key,))
    return bool(rows[0]["locked"])


async def unlock(conn: aiopg.Connection, key: int) -> None:
    """Release a session advisory lock taken with try_lock."""
    await _execute(conn, "SELECT pg_advisory_unlock(%s)", (key,))


async def vacuum_settings(conn: aiopg.Connection) -> dict[str, str]:
    """The server's `autovacuum` and `track_counts` ('on'/'off'): autovacuum needs both on."""
    rows = await _rows(
        conn,
        "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'track_counts')",
    )
    return {str(row["name"]): str(row["setting"]) for row in rows}
