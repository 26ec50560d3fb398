"""Plain data shared by the API and the workers: priorities, states, and the task a handler gets.

Each is defined once here. The schema restates some of them for the database's own checks (the
`state` CHECK, `asynctask_channel()`, `asynctask_state()`, the unique-key index); tests check that
they agree with these.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final


class Priority(StrEnum):
    """A task's priority; its pool of workers and its NOTIFY channel follow from it."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def number(self) -> int:
        """The `priority` column's value: 1 = high, 2 = normal, 3 = low (the original's)."""
        return _NUMBERS[self]

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this priority (schema.sql's asynctask_channel gives the same)."""
        return f"tasks_{self.value}"

    @classmethod
    def of(cls, number: int) -> Priority:
        """The priority stored as `number` in the `priority` column."""
        return _BY_NUMBER[number]


_NUMBERS: Final = {Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
_BY_NUMBER: Final = {number: priority for priority, number in _NUMBERS.items()}
PRIORITIES: Final = tuple(Priority)
DEFAULT_PRIORITY: Final = Priority.NORMAL


class State(StrEnum):
    """Where a task is in its life (see lifecycle.py for how it moves).

    SCHEDULED is derived, never stored: a task due later is stored `available` with a future
    `scheduled_at`, so the claim and its index need nothing to move it when its time comes.
    """

    SCHEDULED = "scheduled"
    AVAILABLE = "available"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the final states: nothing moves the task on except a manual retry."""
        return self in FINISHED_STATES


STATES: Final = tuple(State)  # as the API shows them
# What the `state` column holds (its CHECK): every state but the derived SCHEDULED.
STORED_STATES: Final = tuple(state for state in State if state is not State.SCHEDULED)
# Due once scheduled_at has passed: what a claim takes (the partial index's condition).
DUE_STATES: Final = frozenset({State.AVAILABLE, State.RETRYING})
FINISHED_STATES: Final = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})
# A running task is cancelled at once too: its worker stops the handler, or discards its outcome.
CANCELLABLE_STATES: Final = (State.SCHEDULED, State.AVAILABLE, State.RETRYING, State.RUNNING)
RETRYABLE_STATES: Final = (State.FAILED, State.CANCELLED)
# While a task is in one of these stored states, its (type, unique_key) is taken: the partial
# unique index tasks_unique_key_idx covers exactly these (a scheduled task is stored available).
UNIQUE_KEY_STATES: Final = frozenset({State.AVAILABLE, State.RUNNING, State.RETRYING})
UNIQUE_KEY_MAX: Final = 200
# Where cancel_task tells the worker of a running task (payload: "<id> <locked_by>"); queries.sql
# names it too.
CANCEL_CHANNEL: Final = "tasks_cancel"
# NOTIFY channel of tasks reaching a final state, payload "id,id,..." ('' = any): queries.sql's
# `finish` and `cancel_task` send it, the API's wait-for-result (service/waiters.py) listens.
FINISHED_CHANNEL: Final = "tasks_finished"
# Task type names, as config_loader.py allows them for handlers and the API for tasks: also keeps
# NUL bytes and SQL-looking text out of the list filter.
TYPE_PATTERN: Final = r"^[A-Za-z0-9_.\-]{1,100}$"


@dataclass(frozen=True, slots=True)
class Task:
    """What a handler receives: one claimed task, for one attempt (attributes, not a dict)."""

    id: int
    type: str
    priority: Priority
    attempts: int
    max_attempts: int
    data: dict[str, Any]
