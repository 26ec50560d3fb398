"""One claimed task, from its row to its outcome: decode, run the handler, decide what comes next.

The row's data arrives as JSON text and is decoded here, one task at a time, with the slot's link
naming the task: a row that cannot be decoded (nested too deep for Python, whatever put it in the
table) fails permanently with a last_error that says why, and the worker goes on; should decoding
or the handler kill the process instead, the supervisor knows which task to charge.
"""

from __future__ import annotations

import json
import time
from typing import Any

from asynctask.core.config import Config
from asynctask.core.lifecycle import Event, Outcome, decide
from asynctask.core.models import Priority, Task
from asynctask.workers.attempt import AttemptRunner
from asynctask.workers.link import SlotLink
from asynctask.workers.registry import Handler
from asynctask.workers.report import TaskReport
from asynctask.workers.tracebacks import describe_error


class UndecodableRow(Exception):
    """A claimed row's data is not a JSON object Python can decode."""


def decode(row: dict[str, Any], priority: Priority) -> Task:
    """The Task a handler receives, from a claimed row; UndecodableRow if its data is unusable."""
    try:
        data = json.loads(row["data"])
    except (RecursionError, ValueError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise UndecodableRow(f"its data cannot be decoded ({why})") from None
    if type(data) is not dict:
        raise UndecodableRow(f"its data is a JSON {type(data).__name__}, not an object")
    return Task(row["id"], row["type"], priority, row["attempts"], row["max_attempts"], data)


class TaskExecutor:
    """Runs claimed rows one at a time for one slot and decides each one's outcome."""

    def __init__(
        self,
        config: Config,
        link: SlotLink,
        handlers: dict[str, Handler],
        attempts: AttemptRunner,
        report: TaskReport,
    ) -> None:
        self.config = config
        self.link = link
        self.priority = link.slot.priority
        self.handlers = handlers
        self.attempts = attempts
        self.report = report

    async def run(self, row: dict[str, Any], token: str) -> Outcome:
        """Run one claimed row; its outcome, to be recorded (the link names it meanwhile)."""
        self.link.running(row["id"])
        try:
            task = decode(row, self.priority)
        except UndecodableRow as exc:
            attempts, most = row["attempts"], row["max_attempts"]
            shown = Task(row["id"], row["type"], self.priority, attempts, most, {})
            message = f"task {row['id']}: {exc}; failed permanently without running"
            return self._decided(shown, token, Event.UNDECODABLE, None, message)
        handler = self.handlers.get(task.type)
        if handler is None:
            message = (
                f"no handler is registered for type {task.type!r} (handlers.{task.type} is not"
                " in the config); failed permanently"
            )
            return self._decided(task, token, Event.UNKNOWN_TYPE, None, message)
        started = time.perf_counter()
        error = await self.attempts.run(handler, task)
        seconds = time.perf_counter() - started
        if error is None:
            return self._decided(task, token, Event.RETURNED, seconds, None)
        # Ours (the attempt's timeout, the shutdown grace) or the handler's own: either way it ran
        # out of time, and is retried like any failure.
        event = Event.TIMED_OUT if isinstance(error, TimeoutError) else Event.RAISED
        return self._decided(task, token, event, seconds, describe_error(error))

    def _decided(
        self, task: Task, token: str, event: Event, seconds: float | None, error: str | None
    ) -> Outcome:
        decision = decide(event, task.attempts, task.max_attempts, self.config.retry)
        self.report.finished(task, decision.state, seconds, error, decision.delay_ms)
        return Outcome(task.id, token, decision, error)
