"""Bulk actions: cancel or retry every task matching a filter, in one statement.

Only the moves a single cancel or retry may make: a filter's state must be one the action allows
(cancel: models.CANCELLABLE_STATES; retry: models.RETRYABLE_STATES), and without one the action
takes all of them. The preview count comes from the trigger-kept counts (core/counts.py), so it
costs no scan however many tasks match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiopg

from asynctask.core.connections import execute, rows
from asynctask.core.models import Priority, State
from asynctask.core.sql import QUERIES


@dataclass(frozen=True, slots=True)
class BulkFilter:
    """Which tasks a bulk action takes: any of `states`, and the priority and type if given."""

    states: list[str]
    priority: Priority | None = None
    type: str | None = None

    @staticmethod
    def of(given: Mapping[str, Any], allowed: Sequence[State]) -> BulkFilter:
        """From a validated request: its state (one of `allowed`) or all of `allowed`."""
        states = [given["state"]] if given.get("state") else [str(s) for s in allowed]
        priority = Priority(given["priority"]) if given.get("priority") else None
        return BulkFilter(states, priority, given.get("type"))

    def count_args(self) -> tuple[list[str], Priority | None, str | None]:
        """The arguments of counts.matching for this filter."""
        return self.states, self.priority, self.type

    def params(self) -> tuple[str, int | None, str | None]:
        """The statement's parameters ($1 text[], $2 smallint, $3 text)."""
        number = None if self.priority is None else self.priority.number
        return "{" + ",".join(self.states) + "}", number, self.type


async def run_bulk(conn: aiopg.Connection, action: str, chosen: BulkFilter) -> int:
    """Cancel or retry (`action`) every matching task in one statement; how many."""
    if action == "cancel":
        return await execute(conn, QUERIES["bulk_cancel"], *chosen.params())
    found = await rows(conn, QUERIES["bulk_retry"], *chosen.params())
    return sum(int(row["tasks"]) for row in found)
