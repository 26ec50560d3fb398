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
        self, task: Task, outcome: str, seconds: float | None, error: str | None = None
    ) -> None:
        """One attempt ended as `outcome`; `seconds` is None when no handler ran."""
        # The hot path of a drain: with metrics off and completions below the log level this is
        # one None check and one cached level lookup.
        if self.metrics is not None:
            self.metrics.observe(outcome, task.type, seconds)
        level = LEVELS[outcome]
        if not log.isEnabledFor(level):
            return
        took = "" if seconds is None else f" after {seconds:.3f} s"
        reason = "" if error is None else f": {error.splitlines()[0]}"
        log.log(
            level,
            "%s: task %s (%s) attempt %s %s%s%s",
            self.slot,
            task.id,
            task.type,
            task.attempts,
            outcome,
            took,
            reason,
            extra={
                "event": "task finished",
                "slot": self.slot,
                "task_id": task.id,
                "type": task.type,
                "attempt": task.attempts,
                "outcome": outcome,
                "duration": None if seconds is None else round(seconds, 6),
                "error": None if error is None else error.splitlines()[0],
            },
        )
