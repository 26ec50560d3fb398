"""The tasks table as the API reads and changes it: plain inserts, get, list, cancel, retry.

One async function per operation, each running a named statement of queries.sql on a connection
the caller passes (the API's pool lends one). Creates with a unique_key or an Idempotency-Key go
through creates.py, which reuses `NewRow`, `columns` and `task_row` from here so both paths
answer with the same row shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import aiopg
import psycopg2.errors

from asynctask.core import arrays
from asynctask.core.connections import rows
from asynctask.core.errors import InvalidTransition, TaskNotFound, UniqueKeyTaken
from asynctask.core.models import (
    CANCELLABLE_STATES,
    PRIORITIES,
    RETRYABLE_STATES,
    STORED_STATES,
    Priority,
    State,
)
from asynctask.core.sql import QUERIES


class NewRow(NamedTuple):
    """One task to insert: type, priority number, max_attempts, data as JSON text, and optionally
    when it is due (`scheduled_at` as ISO 8601 text, or `delay_seconds` from now) and its
    `unique_key` (creates.py inserts those)."""

    type: str
    priority: int
    max_attempts: int
    data_json: str
    scheduled_at: str | None = None
    delay_seconds: float | None = None
    unique_key: str | None = None


def task_row(row: dict[str, Any]) -> dict[str, Any]:
    """A task row as callers get it: its priority as a Priority, no `notified` column."""
    row["priority"] = Priority.of(row["priority"])
    row.pop("notified", None)
    row.pop("finished", None)
    return row


async def insert_task_rows(conn: aiopg.Connection, tasks: Sequence[NewRow]) -> list[dict[str, Any]]:
    """Insert tasks and NOTIFY their pools at commit; the new rows (without data) in input order."""
    if len(tasks) == 1:
        found = await rows(conn, QUERIES["insert_one"], *tasks[0][:6])
    else:
        found = await rows(conn, QUERIES["insert_many"], *columns(tasks))
    return [task_row(row) for row in found]


async def insert_tasks(conn: aiopg.Connection, tasks: Sequence[NewRow]) -> list[int]:
    """As insert_task_rows, but only the ids (in input order): the batch route's answer."""
    found = await rows(conn, QUERIES["insert_many_ids"], *columns(tasks))
    return [row["id"] for row in found]


def columns(tasks: Sequence[NewRow]) -> tuple[str | None, ...]:
    """The plain insert statements' array parameters, as array literals."""
    # Array literals (core/arrays.py), sent as text: the statement casts them.
    # Rows of the first four fields alone (callers from before tasks for later) are due now.
    types, priorities, attempts, data, *rest = zip(*tasks, strict=True)
    at, delay = (rest[0], rest[1]) if rest else ((), ())
    return (
        arrays.texts(types),
        arrays.numbers(priorities),
        arrays.numbers(attempts),
        arrays.texts(data),
        arrays.texts(at),
        arrays.numbers(delay),
    )


async def get_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """One task as the API shows it (data as JSON text); TaskNotFound if there is none."""
    found = await rows(conn, QUERIES["get_task"], task_id)
    if not found:
        raise TaskNotFound(f"task {task_id} does not exist")
    return task_row(found[0])


async def list_tasks(
    conn: aiopg.Connection,
    *,
    limit: int,
    state: State | None = None,
    priority: Priority | None = None,
    type_: str | None = None,
    before_id: int | None = None,
    max_bytes: int,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated: pass the last id seen as `before_id` for the next page.

    Rows come while their data totals at most `max_bytes` (the first always); a last row with
    `data` None means the page was cut there and more rows follow.
    """
    params = list_params(limit, max_bytes, state, priority, type_, before_id)
    return [task_row(row) for row in await rows(conn, QUERIES["list_tasks"], *params)]


def list_params(
    limit: int,
    max_bytes: int,
    state: State | None = None,
    priority: Priority | None = None,
    type_: str | None = None,
    before_id: int | None = None,
) -> tuple[Any, ...]:
    """The list statement's filter parameters: stored states (running apart), priorities, type,
    cursor, limit, whether running tasks are wanted, the state as shown (scheduled, available:
    both stored `available`), and the page's byte budget."""
    if state is None:
        stored = [s for s in STORED_STATES if s != State.RUNNING]
    elif state in (State.SCHEDULED, State.AVAILABLE):
        stored = [State.AVAILABLE]
    else:
        stored = [s for s in (state,) if s != State.RUNNING]
    shown = state if state in (State.SCHEDULED, State.AVAILABLE) else None
    states = "{" + ",".join(stored) + "}"
    chosen = PRIORITIES if priority is None else (priority,)
    numbers = arrays.numbers([p.number for p in chosen])
    running = state in (None, State.RUNNING)
    return states, numbers, type_, before_id, limit, running, shown, max_bytes


async def cancel_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """Cancel an available, retrying or running task; the row says what it `was` before.

    A running task's worker is told by notification (tasks_cancel) to stop its handler.
    """
    found = await rows(conn, QUERIES["cancel_task"], task_id, [s.value for s in CANCELLABLE_STATES])
    if not found:
        current = await get_task(conn, task_id)
        raise InvalidTransition(task_id, current["state"], CANCELLABLE_STATES)
    return task_row(found[0])


async def retry_task(conn: aiopg.Connection, task_id: int) -> dict[str, Any]:
    """Put a failed or cancelled task back to available with a fresh attempt budget.

    UniqueKeyTaken if an unfinished task of its type holds its unique_key meanwhile.
    """
    try:
        found = await rows(
            conn, QUERIES["retry_task"], task_id, [s.value for s in RETRYABLE_STATES]
        )
    except psycopg2.errors.UniqueViolation:
        task = await get_task(conn, task_id)
        holder = await rows(conn, QUERIES["unique_key_holder"], task["type"], task["unique_key"])
        held_id, held_state = (holder[0]["id"], holder[0]["state"]) if holder else (None, "")
        raise UniqueKeyTaken(task_id, task["unique_key"], held_id, held_state) from None
    if not found:
        current = await get_task(conn, task_id)
        raise InvalidTransition(task_id, current["state"], RETRYABLE_STATES)
    return task_row(found[0])
