"""Every database operation asynctask performs, each a function named by its intent.

The statements themselves are in queries.sql (one named block each, loaded by sql.py); the
plumbing that runs them is connections.py. Callers pass an aiopg connection (the API acquires one
from its pool; a worker owns one) and never see SQL text. This module must not import aiohttp:
the workers use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiopg

from asynctask.core.connections import (
    execute,
    execute_text,
    rows,
)
from asynctask.core.errors import (
    InvalidTransition,
    TaskNotFound,
)
from asynctask.core.lifecycle import Outcome
from asynctask.core.models import (
    CANCELLABLE_STATES,
    PRIORITIES,
    RETRYABLE_STATES,
    STATES,
    Priority,
    State,
)
from asynctask.core.sql import QUERIES


class NewRow(NamedTuple):
    """One task to insert: type, priority number, max_attempts, data as JSON text."""

    type: str
    priority: int
    max_attempts: int
    data_json: str


@dataclass(frozen=True, slots=True)
class Held:
    """A running task taken over from another claim (reclaim_*): whose it was, its attempts."""

    id: int
    previous: str
    attempts: int
    max_attempts: int


def _task(row: dict[str, Any]) -> dict[str, Any]:
    row["priority"] = Priority.of(row["priority"])
    row.pop("notified", None)
    return row


# --- server ---------------------------------------------------------------------------------------


async def connection_limits(conn: aiopg.Connection) -> tuple[int, int]:
    """(max_connections, superuser_reserved_connections) of the server."""
    row = (await rows(conn, QUERIES["connection_limits"]))[0]
    return row["max"], row["reserved"]


async def ping(conn: aiopg.Connection) -> None:
    """One round trip; raises if the server does not answer."""
    await rows(conn, QUERIES["ping"])


# --- API: create, read, list, cancel, retry ------------------------------------------------------


async def insert_task_rows(conn: aiopg.Connection, tasks: Sequence[NewRow]) -> list[dict[str, Any]]:
    """Insert tasks and NOTIFY their pools at commit; the new rows (without data) in input order."""
    if len(tasks) == 1:
        found = await rows(conn, QUERIES["insert_one"], *tasks[0])
    else:
        found = await rows(conn, QUERIES["insert_many"], *_columns(tasks))
    return [_task(row) for row in found]


async def insert_tasks(conn: aiopg.Connection, tasks: Sequence[NewRow]) -> list[int]:
    """As insert_task_rows, but only the ids (in input order): the batch route's answer."""
    found = await rows(conn, QUERIES["insert_many_ids"], *_columns(tasks))
    return [row["id"] for row in found]


def _columns(tasks: Sequence[NewRow]) -> tuple[str, str, str, str]:
    # Array literals built here and sent as text (the statement casts them): psycopg2's ARRAY[...]
    # adaptation quotes each element in Python and makes the server parse one expression per row;
    # a literal is one string, parsed in one pass, which halves the batch insert.
    types, priorities, attempts, data = zip(*tasks, strict=True)
    return _text_array(types), _int_array(priorities), _int_array(attempts), _text_array(data)


def _text_array(values: Sequence[str]) -> str:
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _int_array(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


async def get_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """One task as the API shows it (data as JSON text); TaskNotFound if there is none."""
    found = await rows(conn, QUERIES["get_task"], task_id)
    if not found:
        raise TaskNotFound(f"task {task_id} does not exist")
    return _task(found[0])


async def list_tasks(
    conn: aiopg.Connection,
    *,
    limit: int,
    state: State | None = None,
    priority: Priority | None = None,
    type_: str | None = None,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated: pass the last id seen as `before_id` for the next page."""
    params = list_params(limit, state, priority, type_, before_id)
    return [_task(row) for row in await rows(conn, QUERIES["list_tasks"], *params)]


def list_params(
    limit: int,
    state: State | None = None,
    priority: Priority | None = None,
    type_: str | None = None,
    before_id: int | None = None,
) -> tuple[Any, ...]:
    """The list statement's parameters for these filters (states other than running, and so on)."""
    listed = [s for s in STATES if s != State.RUNNING] if state is None else [state]
    states = "{" + ",".join(s for s in listed if s != State.RUNNING) + "}"
    numbers = _int_array([p.number for p in PRIORITIES] if priority is None else [priority.number])
    return states, numbers, type_, before_id, limit, state in (None, State.RUNNING)


async def cancel_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """Cancel a task that has not started (available or retrying)."""
    found = await rows(conn, QUERIES["cancel_task"], task_id, [s.value for s in CANCELLABLE_STATES])
    if not found:
        current = await get_task(conn, task_id)
        raise InvalidTransition(task_id, current["state"], CANCELLABLE_STATES)
    return _task(found[0])


async def retry_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """Put a failed or cancelled task back to available with a fresh attempt budget."""
    found = await rows(conn, QUERIES["retry_task"], task_id, [s.value for s in RETRYABLE_STATES])
    if not found:
        current = await get_task(conn, task_id)
        raise InvalidTransition(task_id, current["state"], RETRYABLE_STATES)
    return _task(found[0])


# --- workers: claim, finish, leases, take-overs ---------------------------------------------------


async def claim(
    conn: aiopg.Connection,
    *,
    priority: Priority,
    limit: int,
    locked_by: str,
    token: str,
    lease_seconds: float,
    max_bytes: int,
) -> list[dict[str, Any]]:
    """Claim due tasks of one priority (at most `limit`, about `max_bytes` of data), in id order.

    Each row: id, type, attempts (this one included), max_attempts, data (JSON text).
    """
    found = await rows(
        conn, QUERIES["claim"], priority.number, limit, locked_by, token, lease_seconds, max_bytes
    )
    found.sort(key=lambda row: row["id"])
    return found


async def finish(conn: aiopg.Connection, outcomes: Sequence[Outcome]) -> int:
    """Write many decisions in one statement; returns how many still held their claim."""
    if not outcomes:
        return 0
    return await execute(
        conn,
        QUERIES["finish"],
        [o.task_id for o in outcomes],
        [o.token for o in outcomes],
        [o.decision.state.value for o in outcomes],
        [o.decision.delay_ms for o in outcomes],
        [o.decision.uncharge for o in outcomes],
        [o.error for o in outcomes],
    )


async def extend_leases(conn: aiopg.Connection, tokens: Sequence[str], lease_seconds: float) -> int:
    """Push the lease of every task still held under these claim tokens."""
    if not tokens:
        return 0
    return await execute(conn, QUERIES["extend_leases"], list(tokens), lease_seconds)


async def running_lockers(conn: aiopg.Connection, host: str) -> list[str]:
    """The distinct `locked_by` values of running tasks claimed on one host."""
    pattern = host.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + ":%"
    return [row["locked_by"] for row in await rows(conn, QUERIES["running_lockers"], pattern)]


async def reclaim_lockers(
    conn: aiopg.Connection,
    lockers: Sequence[str],
    *,
    locked_by: str,
    token: str,
    lease_seconds: float,
) -> list[Held]:
    """Take over the running tasks of these (dead) lockers under our own claim token."""
    if not lockers:
        return []
    found = await rows(
        conn, QUERIES["reclaim_lockers"], list(lockers), locked_by, token, lease_seconds
    )
    return [Held(**row) for row in found]


async def reclaim_expired(
    conn: aiopg.Connection, *, locked_by: str, token: str, lease_seconds: float, limit: int = 1000
) -> list[Held]:
    """Take over running tasks whose lease ran out, under our own claim token."""
    found = await rows(conn, QUERIES["reclaim_expired"], locked_by, token, lease_seconds, limit)
    return [Held(**row) for row in found]


async def listen(conn: aiopg.Connection, priority: Priority) -> None:
    """LISTEN on a priority's channel (a name from models.Priority, never from a request)."""
    await execute_text(conn, f"LISTEN {priority.channel}")


async def listen_channel(conn: aiopg.Connection, channel: str) -> None:
    """LISTEN on one of asynctask's own channels (a constant, never from a request)."""
    if not channel.isidentifier():
        raise ValueError(f"not a channel name: {channel!r}")
    await execute_text(conn, f"LISTEN {channel}")


# --- operations: stats and retention --------------------------------------------------------------


async def queue_lag(conn: aiopg.Connection) -> dict[Priority, float]:
    """Seconds since the oldest due task of each priority became due (0 when none is waiting)."""
    found = await rows(conn, QUERIES["queue_lag"], [p.number for p in PRIORITIES])
    return {Priority.of(row["priority"]): row["lag"] for row in found}


async def prune_finished(
    conn: aiopg.Connection, *, state: str, older_than_days: float, limit: int = 5000
) -> int:
    """Delete up to `limit` tasks of one finished state older than the cutoff; returns how many."""
    return await execute(conn, QUERIES["prune_finished"], state, older_than_days, limit)


async def try_lock(conn: aiopg.Connection, key: int) -> bool:
    """Take a session advisory lock if free (one pruner across all supervisors)."""
    return bool((await rows(conn, QUERIES["try_lock"], key))[0]["locked"])


async def unlock(conn: aiopg.Connection, key: int) -> None:
    """Release a session advisory lock taken with try_lock."""
    await rows(conn, QUERIES["unlock"], key)
