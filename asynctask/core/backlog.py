"""What waits in each priority's queue, read from the due index (tasks_due_idx), never a scan.

The statistics snapshot (stats.py) reads lag, scheduled counts and which priorities have due
work; a pool leader reads `next_due` to know when to wake (workers/due.py). Each reads one end of
the index per priority, so a full queue table costs them no more than an empty one.
"""

from __future__ import annotations

from typing import NamedTuple

import aiopg

from asynctask.core.connections import rows
from asynctask.core.models import PRIORITIES, Priority
from asynctask.core.sql import QUERIES


async def queue_lag(conn: aiopg.Connection) -> dict[Priority, float]:
    """Seconds since the oldest due task of each priority became due (0 when none is waiting)."""
    found = await rows(conn, QUERIES["queue_lag"], [p.number for p in PRIORITIES])
    return {Priority.of(row["priority"]): row["lag"] for row in found}


async def scheduled_counts(conn: aiopg.Connection) -> dict[Priority, int]:
    """How many scheduled tasks each priority has (read from the due index's future end)."""
    found = await rows(conn, QUERIES["scheduled_counts"], [p.number for p in PRIORITIES])
    return {Priority.of(row["priority"]): int(row["tasks"]) for row in found}


class NextDue(NamedTuple):
    """A pool leader's next due time (next_due)."""

    due_in: float | None  # seconds from now (negative: due already); None: nothing due later
    together: bool  # another task is due at the same instant
    clock: float  # the server's clock, epoch seconds


async def next_due(conn: aiopg.Connection, priority: Priority, since_seconds: float) -> NextDue:
    """The earliest task of `priority` due later than `since_seconds` ago: a leader's timer."""
    row = (await rows(conn, QUERIES["next_due"], priority.number, since_seconds))[0]
    return NextDue(row["due_in"], row["together"], row["clock"])


async def due_priorities(conn: aiopg.Connection) -> set[Priority]:
    """The priorities with at least one due task (available or retrying, scheduled_at passed)."""
    found = await rows(conn, QUERIES["due_priorities"], [p.number for p in PRIORITIES])
    return {Priority.of(row["priority"]) for row in found}
