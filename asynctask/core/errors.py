"""asynctask's own errors: a small hierarchy whose messages name the thing that is wrong."""

from __future__ import annotations


class AsyncTaskError(Exception):
    """Base of every error asynctask raises on purpose."""


class ConfigError(AsyncTaskError):
    """The configuration (file, environment or command line) has a bad value."""


class DatabaseError(AsyncTaskError):
    """The database could not be reached or refused an operation."""


class DatabaseUnavailable(DatabaseError):
    """The database did not answer (down, restarting, or too slow)."""


class TaskNotFound(AsyncTaskError):
    """No task has the requested id."""


class InvalidTransition(AsyncTaskError):
    """The task is in a state that does not allow the requested change."""

    def __init__(self, task_id: int, state: str, allowed: tuple[str, ...]) -> None:
        self.task_id = task_id
        self.state = state
        self.allowed = allowed
        super().__init__(f"task {task_id} is {state}; this needs one of: {', '.join(allowed)}")


class ChangedMeanwhile(AsyncTaskError):
    """Another writer changed rows an operation depended on while it ran: asking again works."""


class HandlerImportError(AsyncTaskError):
    """A `handlers:` entry names a module or function that cannot be imported."""


class UniqueKeyTaken(AsyncTaskError):
    """A finished task cannot go back to the queue: an unfinished task holds its unique_key."""

    def __init__(self, task_id: int, unique_key: str, holder: int | None, state: str) -> None:
        self.task_id = task_id
        self.unique_key = unique_key
        self.holder = holder
        held = f"task {holder} ({state})" if holder is not None else "another unfinished task"
        super().__init__(
            f"task {task_id} cannot be retried: its unique_key {unique_key!r} is held by {held}"
        )


class IdempotencyKeyTaken(AsyncTaskError):
    """A request's Idempotency-Key already has a stored answer (a twin was first)."""
