"""Periodic tasks in the database: each schedule's cursor (table `schedule_state`), and firing.

schedules.py computes a schedule's ticks from config.yaml without touching the database; here a
tick becomes a task. `fire_schedule` enqueues the ticks past the cursor and moves it in one
statement, so supervisors on several hosts firing the same tick enqueue it once
(workers/scheduler.py drives it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiopg

from asynctask.core.connections import rows
from asynctask.core.schedules import Schedule
from asynctask.core.sql import QUERIES


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
