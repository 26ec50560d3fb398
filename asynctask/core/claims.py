"""A worker's hold on tasks: claim, finish, lease extension, and take-overs of others' claims.

Every claim carries a token; finish, still_held and extend_leases act only on rows still held
under theirs, so a task rescued meanwhile (workers/recovery.py, via reclaim_*) is never written
by its previous holder. Statements are in queries.sql; callers pass the worker's own connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiopg

from asynctask.core import arrays
from asynctask.core.connections import execute, rows
from asynctask.core.lifecycle import Outcome
from asynctask.core.models import Priority
from asynctask.core.sql import QUERIES


@dataclass(frozen=True, slots=True)
class Held:
    """A running task taken over from another claim (reclaim_*): whose it was, its attempts."""

    id: int
    previous: str
    attempts: int
    max_attempts: int


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


async def extend_leases(
    conn: aiopg.Connection, ids: Sequence[int], tokens: Sequence[str], lease_seconds: float
) -> int:
    """Push the lease of those of the tasks `ids` still held under one of these claim tokens."""
    if not ids or not tokens:
        return 0
    return await execute(
        conn, QUERIES["extend_leases"], arrays.numbers(ids), arrays.texts(tokens), lease_seconds
    )


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
