"""A task's life: every "what next, and when" decided by one pure function, `decide`.

A live worker's outcome, a dead worker's leftovers and an expired lease all go through `decide`,
and the result is written by the same `finish` statement (claims.py), so the give-up rule (attempts
spent: failed) lives here and nowhere else, not restated in SQL. `TRANSITIONS` lists every move a
task can make; README's state diagram is `state_diagram()`, and a test keeps the two in step with
`decide`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from asynctask.core import backoff
from asynctask.core.models import State


class Event(StrEnum):
    """What happened to a claimed task."""

    RETURNED = "handler returned"
    RAISED = "handler raised"
    TIMED_OUT = "timed out"
    UNKNOWN_TYPE = "unknown type"
    UNDECODABLE = "undecodable row"
    WORKER_CRASHED = "worker died"
    LEASE_EXPIRED = "lease expired"
    NOT_STARTED = "claimed, not started"
    ALREADY_DONE = "done, not yet written"
    RETRY_ASKED = "handler raised Retry"  # asynctask.Retry(after_seconds): its own delay
    CANCEL_ASKED = "handler raised Cancel"  # asynctask.Cancel(reason): no further attempts


# The attempt was spent and may be tried again while attempts remain.
_RETRIED: Final = frozenset(
    {Event.RAISED, Event.TIMED_OUT, Event.WORKER_CRASHED, Event.LEASE_EXPIRED, Event.RETRY_ASKED}
)
# Running it again cannot help: fail at once, whatever attempts remain.
_PERMANENT: Final = frozenset({Event.UNKNOWN_TYPE, Event.UNDECODABLE})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a failed attempt waits before the next one (config: retry_backoff...)."""

    strategy: str  # fixed | exponential
    base_ms: int
    cap_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    """A task's next state; `delay_ms` None keeps its place (scheduled_at) in the queue."""

    state: State
    delay_ms: int | None = None
    uncharge: bool = False  # give back the attempt the claim counted


def decide(
    event: Event,
    attempts: int,
    max_attempts: int,
    retry: RetryPolicy,
    rand: backoff.Random = random.random,
    asked_delay_ms: int | None = None,
) -> Decision:
    """The next state of a claimed task (`attempts` counts the claim's own attempt).

    `asked_delay_ms` is the delay a handler's Retry asked for (RETRY_ASKED only).
    """
    if event in (Event.RETURNED, Event.ALREADY_DONE):
        return Decision(State.COMPLETED)
    if event is Event.CANCEL_ASKED:
        return Decision(State.CANCELLED)
    if event is Event.NOT_STARTED:
        # As it was before the claim: its attempt is not counted, its due time unchanged.
        before = State.RETRYING if attempts > 1 else State.AVAILABLE
        return Decision(before, uncharge=True)
    if event in _PERMANENT or attempts >= max_attempts:
        return Decision(State.FAILED)
    if event is Event.RETRY_ASKED and asked_delay_ms is not None:
        # It spends the attempt (counted at the claim) like a failure; only the wait is its own.
        return Decision(State.RETRYING, asked_delay_ms)
    assert event in _RETRIED, event
    delay = backoff.retry_delay(
        attempts, strategy=retry.strategy, base_ms=retry.base_ms, cap_ms=retry.cap_ms, rand=rand
    )
    return Decision(State.RETRYING, delay)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision for one claimed task, as the finishing statement writes it."""

    task_id: int
    token: str
    decision: Decision
    error: str | None = None
    result: str | None = None  # a completion's return value as JSON text (None: no value)

    @property
    def state(self) -> State:
        """The state the task moves to."""
        return self.decision.state


# Every move a task makes: (from, to, why). The moves from `running` are decided by `decide`,
# except a cancel; the API's moves (create, cancel, retry) and the claim are guarded by the states
# named in models.py. Cancelling a running task ends it at once in the database; its worker hears
# of it (workers/cancels.py), stops a coroutine handler, and never writes that attempt's outcome.
TRANSITIONS: Final[tuple[tuple[str, State, str], ...]] = (
    ("[*]", State.AVAILABLE, "created"),
    ("[*]", State.SCHEDULED, "created for later"),
    (State.SCHEDULED, State.AVAILABLE, "its time comes"),
    (State.AVAILABLE, State.RUNNING, "claimed"),
    (State.RETRYING, State.RUNNING, "claimed, when due"),
    (State.RUNNING, State.COMPLETED, "handler returned (its value is the result)"),
    (State.RUNNING, State.RETRYING, "raised, timed out, result unfit, worker died, lease expired"),
    (State.RUNNING, State.FAILED, "the same, attempts spent; unknown type; undecodable row"),
    (State.RUNNING, State.AVAILABLE, "handed back unstarted (first attempt)"),
    (State.RUNNING, State.RETRYING, "handed back unstarted (a retry)"),
    (State.SCHEDULED, State.CANCELLED, "cancel"),
    (State.RUNNING, State.RETRYING, "handler raised Retry, after its own delay"),
    (State.RUNNING, State.FAILED, "handler raised Retry, attempts spent"),
    (State.RUNNING, State.CANCELLED, "handler raised Cancel"),
    (State.AVAILABLE, State.CANCELLED, "cancel"),
    (State.RETRYING, State.CANCELLED, "cancel"),
    (State.RUNNING, State.CANCELLED, "cancel (handler stopped, or its outcome discarded)"),
    (State.FAILED, State.AVAILABLE, "retry"),
    (State.CANCELLED, State.AVAILABLE, "retry"),
)


# States the API shows but the table never holds: the diagram says so next to them.
DERIVED: Final = (
    (State.SCHEDULED, "derived: stored as available with a future scheduled_at; nothing moves it"),
)


def state_diagram() -> str:
    """TRANSITIONS as a Mermaid state diagram (README shows exactly this)."""
    lines = ["stateDiagram-v2"]
    lines += [f"    {source} --> {target}: {why}" for source, target, why in TRANSITIONS]
    lines += [f"    note right of {state} : {why}" for state, why in DERIVED]
    return "\n".join(lines)
