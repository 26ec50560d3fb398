"""What a worker says about each finished attempt: one log line, and its metrics if enabled.

Completions log at DEBUG: a drain of a million tasks at the default INFO must not write a million
lines (the metrics count them). Retries log at INFO and permanent failures at WARNING, since a
failed task is work lost. Fields go in `extra=`, so `log_format: json` makes them keys.
"""

from __future__ import annotations

import logging

from asynctask.core.models import Task
from asynctask.workers.metrics import WorkerMetrics

log = logging.getLogger("asynctask.worker")
LEVELS = {
    "completed": logging.DEBUG,
    "retrying": logging.INFO,
    "failed": logging.WARNING,
    "cancelled": logging.INFO,
}


class TaskReport:
    """Logs and counts finished attempts for one slot."""

    def __init__(self, slot: str, metrics: WorkerMetrics | None) -> None:
        self.slot = slot
        self.metrics = metrics

    def finished(
        self,
        task: Task,
        outcome: str,
        seconds: float | None,
        error: str | None = None,
        retry_in_ms: int | None = None,
    ) -> None:
        """One attempt ended as `outcome`; `seconds` is None when no handler ran.

        `retry_in_ms` is the wait before the next attempt (retrying only): the line says both
        how long this attempt ran and when the next one starts.
        """
        # The hot path of a drain: with metrics off and completions below the log level this is
        # one None check and one cached level lookup.
        if self.metrics is not None:
            self.metrics.observe(outcome, task.type, seconds)
        level = LEVELS[outcome]
        if not log.isEnabledFor(level):
            return
        first_line = None if error is None else error.splitlines()[0]
        retry_in = None if retry_in_ms is None else retry_in_ms / 1000
        log.log(
            level,
            "%s: task %s (%s) attempt %s of %s %s",
            self.slot,
            task.id,
            task.type,
            task.attempts,
            task.max_attempts,
            describe(outcome, seconds, first_line, retry_in),
            extra=self._fields(task, outcome, seconds, first_line, retry_in),
        )

    def _fields(
        self,
        task: Task,
        outcome: str,
        seconds: float | None,
        error: str | None,
        retry_in: float | None,
    ) -> dict[str, object]:
        """The line's fields: keys of its JSON form (`log_format: json`)."""
        return {
            "event": "task finished",
            "slot": self.slot,
            "task_id": task.id,
            "type": task.type,
            "attempt": task.attempts,
            "max_attempts": task.max_attempts,
            "outcome": outcome,
            "duration": None if seconds is None else round(seconds, 6),
            "retry_in": retry_in,
            "error": error,
        }


def describe(outcome: str, seconds: float | None, error: str | None, retry_in: float | None) -> str:
    """How an attempt ended, in words: "failed after 0.002 s; retrying in 1.000 s: Error: x"."""
    if seconds is None:
        ran = "without running"
    elif outcome == "completed":
        ran = f"in {seconds:.3f} s"
    else:
        ran = f"after {seconds:.3f} s"
    if outcome == "completed":
        return f"completed {ran}"
    if outcome == "retrying":
        then = "retrying" if retry_in is None else f"retrying in {retry_in:.3f} s"
    else:
        then = "the task failed"
    return f"failed {ran}; {then}" + ("" if error is None else f": {error}")
