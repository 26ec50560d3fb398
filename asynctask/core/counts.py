"""Task counts and rates without count(*): read from the trigger-kept tables (schema.sql).

Triggers on `tasks` append one delta row per (priority, state, type) a statement changed;
`compact` folds them into exact totals and per-minute moves. A read is the totals plus the deltas
not yet folded, a few hundred rows at most, however many tasks the table holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import aiopg

from asynctask.core.connections import rows
from asynctask.core.models import Priority, State
from asynctask.core.sql import QUERIES

# One compaction at a time across every worker and API process ("asyncct").
COMPACT_LOCK: Final = 0x61_73_79_6E_63_63_74


@dataclass(frozen=True, slots=True)
class Count:
    """How many tasks have this priority, state and type."""

    priority: Priority
    state: str
    type: str
    tasks: int


@dataclass(frozen=True, slots=True)
class Moves:
    """One minute: tasks created, and tasks that moved into each state."""

    minute: datetime
    created: int
    entered: dict[str, int]


async def compact(conn: aiopg.Connection) -> int | None:
    """Fold the deltas into the totals; how many delta rows, or None if another process is at it."""
    (row,) = await rows(conn, QUERIES["compact_counts"], COMPACT_LOCK)
    return int(row["moved"]) if row["locked"] else None


async def tidy(conn: aiopg.Connection) -> None:
    """Drop zero totals and vacuum the deltas table (for servers without autovacuum)."""
    await rows(conn, QUERIES["forget_zero_counts"])
    await rows(conn, QUERIES["vacuum_count_deltas"])


async def count_tasks(conn: aiopg.Connection) -> list[Count]:
    """Exact non-zero counts per (priority, state, type)."""
    found = await rows(conn, QUERIES["count_tasks"])
    return [
        Count(Priority.of(r["priority"]), r["state"], r["type"], int(r["tasks"])) for r in found
    ]


def matching(
    counts: Iterable[Count],
    states: Iterable[str],
    priority: Priority | None = None,
    type_: str | None = None,
) -> int:
    """How many of the counted tasks are in one of `states` and match the optional filters."""
    wanted = set(states)
    return sum(
        c.tasks
        for c in counts
        if c.state in wanted
        and (priority is None or c.priority is priority)
        and (type_ is None or c.type == type_)
    )


async def task_moves(conn: aiopg.Connection, minutes: int) -> tuple[list[Moves], datetime]:
    """Each of the last `minutes` minutes, oldest first, the current one last; and the time now."""
    found = await rows(conn, QUERIES["task_moves"], minutes)
    moves = [
        Moves(r["minute"], int(r["created"]), {k: int(v) for k, v in r["entered"].items()})
        for r in found
    ]
    return moves, found[-1]["now"]


def entered(moves: Iterable[Moves], state: State) -> int:
    """Tasks that moved into `state` over these minutes."""
    return sum(m.entered.get(state, 0) for m in moves)
