"""The worker registry (table `workers`): heartbeat rows, and what the API and the watch read.

A worker beats every HEARTBEAT_SECONDS; a supervisor none of whose workers beat for
DEAD_AFTER_SECONDS is dead (its host died, or it was killed with its children), and its running
tasks are rescued at once instead of at lease expiry (workers/watch.py). The database's clock
judges every age, so the hosts' clocks need not agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import aiopg

from asynctask.core.connections import execute, rows
from asynctask.core.models import PRIORITIES, Priority
from asynctask.core.sql import QUERIES

HEARTBEAT_SECONDS: Final = 2.0
# Two and a half beats: one late or lost beat is not a death.
DEAD_AFTER_SECONDS: Final = 5.0
# A dead supervisor stays on show this long, then its rows go.
KEEP_DEAD_SECONDS: Final = 3600.0


@dataclass(frozen=True, slots=True)
class Beat:
    """What one worker says about itself in a heartbeat."""

    host: str
    supervisor_pid: int
    slot: str
    priority: Priority
    pid: int
    locked_by: str
    status: str  # idle, busy, paused, recovering, stopping
    task_id: int | None = None


@dataclass(frozen=True, slots=True)
class DeadSupervisor:
    """A supervisor gone silent: the lockers of its workers' last processes."""

    host: str
    pid: int
    lockers: tuple[str, ...]
    silent_seconds: float


async def heartbeat(conn: aiopg.Connection, beat: Beat) -> tuple[bool, int]:
    """Write a worker's row; answers its priority's (paused, version)."""
    found = await rows(
        conn,
        QUERIES["heartbeat"],
        beat.host,
        beat.supervisor_pid,
        beat.slot,
        beat.priority.number,
        beat.pid,
        beat.locked_by,
        beat.status,
        beat.task_id,
    )
    return (found[0]["paused"], found[0]["version"]) if found else (False, 0)


async def forget_worker(conn: aiopg.Connection, beat: Beat) -> None:
    """Remove a worker's row (it stops for good)."""
    await execute(
        conn, QUERIES["forget_worker"], beat.host, beat.supervisor_pid, beat.slot, beat.pid
    )


async def list_workers(conn: aiopg.Connection) -> list[dict[str, Any]]:
    """Every registry row, with `alive` and the database's `now`."""
    found = await rows(conn, QUERIES["list_workers"], DEAD_AFTER_SECONDS)
    for row in found:
        row["priority"] = Priority.of(row["priority"])
    return found


async def workers_summary(conn: aiopg.Connection) -> dict[str, int]:
    """Supervisors alive and dead, live worker slots, and how many are busy."""
    (row,) = await rows(conn, QUERIES["workers_summary"], DEAD_AFTER_SECONDS)
    return {key: int(value) for key, value in row.items()}


async def dead_supervisors(conn: aiopg.Connection) -> list[DeadSupervisor]:
    """Silent supervisors whose tasks are not rescued yet."""
    found = await rows(conn, QUERIES["dead_supervisors"], DEAD_AFTER_SECONDS)
    return [
        DeadSupervisor(r["host"], r["supervisor_pid"], tuple(r["lockers"]), r["silent_seconds"])
        for r in found
    ]


async def mark_rescued(conn: aiopg.Connection, dead: DeadSupervisor) -> None:
    """Record that a dead supervisor's tasks were rescued."""
    await execute(conn, QUERIES["mark_rescued"], dead.host, dead.pid, DEAD_AFTER_SECONDS)


async def forget_old_workers(conn: aiopg.Connection, seconds: float = KEEP_DEAD_SECONDS) -> int:
    """Drop rows silent for longer than `seconds`; how many."""
    return await execute(conn, QUERIES["forget_old_workers"], seconds)


async def live_workers(conn: aiopg.Connection, dead_after: float) -> dict[Priority, int]:
    """Live worker processes per priority, across hosts (0 for a priority nobody serves).

    Live means a heartbeat in the worker registry at most `dead_after` seconds old.
    """
    found = await rows(conn, QUERIES["live_workers"], dead_after)
    counted = {Priority.of(row["priority"]): int(row["workers"]) for row in found}
    return {priority: counted.get(priority, 0) for priority in PRIORITIES}
