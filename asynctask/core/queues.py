"""Paused priorities: the `queues` table, read and changed here (API, CLI and workers alike).

A pause is persisted (it survives restarts) and announced on the `asynctask_queues` channel with
the priority's name, so workers stop claiming within milliseconds (workers/pause.py); their
heartbeat re-reads it as a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import aiopg

from asynctask.core.connections import rows
from asynctask.core.models import PRIORITIES, Priority
from asynctask.core.sql import QUERIES

CHANNEL: Final = "asynctask_queues"


@dataclass(frozen=True, slots=True)
class QueueState:
    """One priority: paused or not, since when (its last change; None if never changed)."""

    priority: Priority
    paused: bool
    since: datetime | None
    version: int

    def as_json(self) -> dict[str, Any]:
        """The API's shape of it."""
        since = None if self.since is None else self.since.isoformat()
        return {"priority": self.priority, "paused": self.paused, "since": since}


def _state(row: dict[str, Any]) -> QueueState:
    return QueueState(
        Priority.of(row["priority"]), row["paused"], row["changed_at"], row["version"]
    )


async def queue_states(conn: aiopg.Connection) -> dict[Priority, QueueState]:
    """Every priority's state (a priority missing from the table counts as running)."""
    found = {
        Priority.of(row["priority"]): _state(row)
        for row in await rows(conn, QUERIES["queue_states"])
    }
    return {p: found.get(p, QueueState(p, False, None, 0)) for p in PRIORITIES}


async def set_paused(conn: aiopg.Connection, priority: Priority, paused: bool) -> QueueState:
    """Pause or resume a priority (idempotent); its state afterwards."""
    (row,) = await rows(conn, QUERIES["set_paused"], priority.number, paused)
    return _state(row)


async def queue_state(conn: aiopg.Connection, priority: Priority) -> tuple[bool, int]:
    """(paused, version) of one priority."""
    found = await rows(conn, QUERIES["queue_state"], priority.number)
    return (found[0]["paused"], found[0]["version"]) if found else (False, 0)
