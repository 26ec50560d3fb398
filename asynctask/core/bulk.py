"""Bulk actions: cancel or retry every task matching a filter, in one statement.

Only the moves a single cancel or retry may make: a filter's state must be one the action allows
(cancel: BULK_CANCELLABLE; retry: models.RETRYABLE_STATES), and without one the action
takes all of them. The preview count comes from the trigger-kept counts (core/counts.py), so it
costs no scan however many tasks match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiopg
import psycopg2.errors

from asynctask.core import counts
from asynctask.core.connections import rows
from asynctask.core.errors import ChangedMeanwhile
from asynctask.core.models import CANCELLABLE_STATES, Priority, State
from asynctask.core.sql import QUERIES

# A bulk cancel leaves running tasks alone: stopping a handler is the single cancel's (its worker
# is told by notification); a bulk statement would only end them behind their workers' backs.
BULK_CANCELLABLE: Final = tuple(s for s in CANCELLABLE_STATES if s is not State.RUNNING)
# Shown states stored as another: scheduled and available are both stored `available`.
_STORED: Final = {State.SCHEDULED: State.AVAILABLE}


@dataclass(frozen=True, slots=True)
class BulkFilter:
    """Which tasks a bulk action takes: any of the stored `states`, narrowed to the state as
    shown (`shown`: scheduled or available, both stored available), priority and type."""

    states: list[str]
    shown: str | None = None
    priority: Priority | None = None
    type: str | None = None

    @staticmethod
    def of(given: Mapping[str, Any], allowed: Sequence[State]) -> BulkFilter:
        """From a validated request: its state (one of `allowed`) or all of `allowed`."""
        asked = State(given["state"]) if given.get("state") else None
        wanted = [asked] if asked is not None else list(allowed)
        stored = list(dict.fromkeys(str(_STORED.get(s, s)) for s in wanted))  # in `allowed` order
        shown = asked if asked in (State.SCHEDULED, State.AVAILABLE) else None
        priority = Priority(given["priority"]) if given.get("priority") else None
        return BulkFilter(stored, shown, priority, given.get("type"))

    def params(self) -> tuple[str, int | None, str | None, str | None]:
        """The statements' parameters ($1 text[], $2 smallint, $3 text, $4 text)."""
        number = None if self.priority is None else self.priority.number
        return "{" + ",".join(self.states) + "}", number, self.type, self.shown


async def count_bulk(conn: aiopg.Connection, chosen: BulkFilter) -> int:
    """How many tasks the action would take now: from the kept counts, and for a shown state
    (scheduled, available) the scheduled ones from the due index (they are stored available)."""
    total = counts.matching(await counts.count_tasks(conn), chosen.states, chosen.priority,
                            chosen.type)  # fmt: skip
    if chosen.shown is None:
        return total
    number = None if chosen.priority is None else chosen.priority.number
    found = await rows(conn, QUERIES["count_scheduled"], number, chosen.type)
    scheduled = min(int(found[0]["tasks"]), total)
    return scheduled if chosen.shown == State.SCHEDULED else total - scheduled


async def run_bulk(conn: aiopg.Connection, action: str, chosen: BulkFilter) -> int:
    """Cancel or retry (`action`) every matching task in one statement; how many."""
    if action == "cancel":
        found = await rows(conn, QUERIES["bulk_cancel"], *chosen.params())
        return int(found[0]["tasks"])
    try:
        found = await rows(conn, QUERIES["bulk_retry"], *chosen.params()[:3])
    except psycopg2.errors.UniqueViolation:
        # A create took one of the retried keys between the statement's check and its write.
        raise ChangedMeanwhile(
            "a task created meanwhile holds the unique_key of a task to retry; ask again"
        ) from None
    return sum(int(row["tasks"]) for row in found)
