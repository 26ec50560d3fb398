"""Every database operation asynctask performs, each a function named by its intent.

The statements themselves are in queries.sql (one named block each, loaded by sql.py); the
plumbing that runs them is connections.py. Callers pass an aiopg connection (the API acquires one
from its pool; a worker owns one) and never see SQL text. This module must not import aiohttp:
the workers use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import aiopg
import psycopg2.errors

from asynctask.core import arrays
from asynctask.core.connections import (
    execute,
    execute_text,
    rows,
)
from asynctask.core.errors import (
    InvalidTransition,
    TaskNotFound,
    UniqueKeyTaken,
)
from asynctask.core.lifecycle import Outcome
from asynctask.core.models import (
    CANCEL_CHANNEL,
    CANCELLABLE_STATES,
    FINISHED_CHANNEL,
    PRIORITIES,
    RETRYABLE_STATES,
    STORED_STATES,
    Priority,
    State,
)
from asynctask.core.schedules import Schedule
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


@dataclass(frozen=True, slots=True)
class Held:
    """A running task taken over from another claim (reclaim_*): whose it was, its attempts."""

    id: int
    previous: str
    attempts: int
    max_attempts: int


def task_row(row: dict[str, Any]) -> dict[str, Any]:
    """A task row as callers get it: its priority as a Priority, no `notified` column."""
    row["priority"] = Priority.of(row["priority"])
    row.pop("notified", None)
    row.pop("finished", None)
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
    # rows(), not execute(): the statement ends in a SELECT (its NOTIFY of finished tasks).
    found = await rows(
        conn,
        QUERIES["finish"],
        arrays.numbers([o.task_id for o in outcomes]),
        arrays.texts([str(o.token) for o in outcomes]),
        arrays.texts([o.decision.state.value for o in outcomes]),
        arrays.numbers([o.decision.delay_ms for o in outcomes]),
        arrays.bools(o.decision.uncharge for o in outcomes),
        arrays.texts([o.error for o in outcomes]),
        arrays.texts([o.result for o in outcomes]),
    )
    return int(found[0]["written"])


async def still_held(conn: aiopg.Connection, task_id: int, token: str) -> bool:
    """True while the task is running under this claim token (not cancelled, not rescued)."""
    return bool((await rows(conn, QUERIES["still_held"], task_id, token))[0]["held"])


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


async def listen_cancels(conn: aiopg.Connection) -> None:
    """LISTEN on the channel that cancel_task notifies for a running task."""
    await execute_text(conn, f"LISTEN {CANCEL_CHANNEL}")


# --- periodic tasks (h/run) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fired:
    """What fire_schedule did: the cursor before, where it moved (None: nothing), the db clock."""

    was: datetime | None
    moved_to: datetime | None
    now: datetime


async def register_schedules(conn: aiopg.Connection, names: Sequence[str]) -> datetime:
    """Give new schedules a cursor at the database's now; returns that clock."""
    return (await rows(conn, QUERIES["register_schedules"], list(names)))[0]["now"]  # type: ignore[no-any-return]


async def schedule_states(
    conn: aiopg.Connection, names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Each named schedule's cursor: {name: {last_tick_at, last_task_id}} (absent: never seen)."""
    found = await rows(conn, QUERIES["schedule_states"], list(names))
    return {row.pop("name"): row for row in found}


async def fire_schedule(
    conn: aiopg.Connection, schedule: Schedule, ticks: Sequence[datetime]
) -> Fired:
    """Enqueue the ticks after the schedule's cursor (and not in the future), one task each."""
    row = (
        await rows(
            conn,
            QUERIES["fire_schedule"],
            schedule.name,
            list(ticks),
            schedule.type,
            schedule.priority.number,
            schedule.max_attempts,
            schedule.data_json,
        )
    )[0]
    return Fired(row["was"], row["moved_to"], row["now"])


async def listen_finished(conn: aiopg.Connection) -> None:
    """LISTEN for tasks reaching a final state (`finish` and `cancel_task` NOTIFY their ids)."""
    await execute_text(conn, f"LISTEN {FINISHED_CHANNEL}")


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


async def scheduled_counts(conn: aiopg.Connection) -> dict[Priority, int]:
    """How many scheduled tasks each priority has (read from the due index's future end)."""
    found = await rows(conn, QUERIES["scheduled_counts"], [p.number for p in PRIORITIES])
    return {Priority.of(row["priority"]): int(row["tasks"]) for row in found}


class NextDue(NamedTuple):
    """A pool leader's next due time (db.next_due)."""

    due_in: float | None  # seconds from now (negative: due already); None: nothing due later
    together: bool  # another task is due at the same instant
    clock: float  # the server's clock, epoch seconds


async def next_due(conn: aiopg.Connection, priority: Priority, since_seconds: float) -> NextDue:
    """The earliest task of `priority` due later than `since_seconds` ago: a leader's timer."""
    row = (await rows(conn, QUERIES["next_due"], priority.number, since_seconds))[0]
    return NextDue(row["due_in"], row["together"], row["clock"])


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


async def vacuum_settings(conn: aiopg.Connection) -> dict[str, str]:
    """The server's `autovacuum` and `track_counts` ('on'/'off'): autovacuum needs both on."""
    found = await rows(conn, QUERIES["vacuum_settings"])
    return {str(row["name"]): str(row["setting"]) for row in found}


# --- first hour (issue 11): priorities with no live worker ---------------------------------------


async def live_workers(conn: aiopg.Connection, dead_after: float) -> dict[Priority, int]:
    """Live worker processes per priority, across hosts (0 for a priority nobody serves).

    Live means a heartbeat in the worker registry at most `dead_after` seconds old.
    """
    found = await rows(conn, QUERIES["live_workers"], dead_after)
    counted = {Priority.of(row["priority"]): int(row["workers"]) for row in found}
    return {priority: counted.get(priority, 0) for priority in PRIORITIES}


async def due_priorities(conn: aiopg.Connection) -> set[Priority]:
    """The priorities with at least one due task (available or retrying, scheduled_at passed)."""
    found = await rows(conn, QUERIES["due_priorities"], [p.number for p in PRIORITIES])
    return {Priority.of(row["priority"]) for row in found}
