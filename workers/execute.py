"""One claimed task, from its row to its outcome: decode, run the handler, decide what comes next.

The row's data arrives as JSON text and is decoded here, one task at a time, with the slot's link
naming the task: a row that cannot be decoded (nested too deep for Python, whatever put it in the
table) fails permanently with a last_error that says why, and the worker goes on; should decoding
or the handler kill the process instead, the supervisor knows which task to charge.

A handler's return value becomes the task's `result` (workers/results.py); its Retry and Cancel
exceptions (asynctask.core.control) are decided like any outcome. A task cancelled while it ran
(workers/cancels.py) has no outcome to write: the API ended it already.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from asynctask.core.config import Config
from asynctask.core.control import Cancel, Retry
from asynctask.core.lifecycle import Event, Outcome, decide
from asynctask.core.models import Priority, State, Task
from asynctask.workers.attempt import AttemptRunner
from asynctask.workers.cancels import CancelBoard
from asynctask.workers.link import SlotLink
from asynctask.workers.registry import Handler
from asynctask.workers.report import TaskReport
from asynctask.workers.results import ResultError, encode_result
from asynctask.workers.tracebacks import describe_error, storable_text


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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A decoded task whose handler is to run now."""

    task: Task
    handler: Handler
    token: str


class TaskExecutor:
    """Runs claimed rows one at a time for one slot and decides each one's outcome."""

    def __init__(
        self,
        config: Config,
        link: SlotLink,
        handlers: dict[str, Handler],
        attempts: AttemptRunner,
        report: TaskReport,
        cancels: CancelBoard | None = None,
    ) -> None:
        self.config = config
        self.link = link
        self.priority = link.slot.priority
        self.handlers = handlers
        self.attempts = attempts
        self.report = report
        self.cancels = cancels or CancelBoard(attempts)

    async def run(self, row: dict[str, Any], token: str) -> Outcome | None:
        """Run one claimed row; its outcome, to be recorded (the link names it meanwhile).

        None when the task was cancelled while this worker held it: nothing is to be written.
        """
        step = self.prepare(row, token)
        if not isinstance(step, Prepared):
            return step
        started = time.perf_counter()
        self.cancels.running(step.task.id, token)
        try:
            value, error = await self.attempts.run(step.handler, step.task)
        finally:
            self.cancels.idle()
        return self.conclude(step, value, error, time.perf_counter() - started)

    def prepare(self, row: dict[str, Any], token: str) -> Prepared | Outcome | None:
        """Everything before the handler: decode, find the handler, skip a cancelled task.

        An Outcome (or None) when the handler must not run. Safe in the handler thread.
        """
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
        if self.cancels.requested(task.id):
            self._discarded(task, None, "cancelled before it started")
            return None
        return Prepared(task, handler, token)

    def conclude(
        self, step: Prepared, value: Any, error: BaseException | None, seconds: float
    ) -> Outcome | None:
        """The outcome of a handler that ran for `seconds`. Safe in the handler thread."""
        task, token = step.task, step.token
        if self.cancels.requested(task.id):
            self._discarded(task, seconds, "cancelled while it ran; its outcome is discarded")
            return None
        if error is None:
            try:
                result = encode_result(value, self.config.max_result_bytes)
            except ResultError as exc:
                return self._decided(task, token, Event.RAISED, seconds, str(exc))
            return self._decided(task, token, Event.RETURNED, seconds, None, result=result)
        return self._failed(task, token, error, seconds)

    def _failed(self, task: Task, token: str, error: BaseException, seconds: float) -> Outcome:
        if isinstance(error, Retry):
            message = f"Retry: {error}"
            return self._decided(task, token, Event.RETRY_ASKED, seconds, message, error.delay_ms)
        if isinstance(error, Cancel):
            return self._decided(task, token, Event.CANCEL_ASKED, seconds, f"Cancel: {error}")
        # Ours (the attempt's timeout, the shutdown grace) or the handler's own: either way it ran
        # out of time, and is retried like any failure.
        event = Event.TIMED_OUT if isinstance(error, TimeoutError) else Event.RAISED
        return self._decided(task, token, event, seconds, describe_error(error))

    def _decided(
        self,
        task: Task,
        token: str,
        event: Event,
        seconds: float | None,
        error: str | None,
        asked_delay_ms: int | None = None,
        result: str | None = None,
    ) -> Outcome:
        decision = decide(
            event,
            task.attempts,
            task.max_attempts,
            self.config.retry,
            asked_delay_ms=asked_delay_ms,
        )
        if error is not None:
            error = storable_text(error)
        self.report.finished(task, decision.state, seconds, error, decision.delay_ms)
        return Outcome(task.id, token, decision, error, result)

    def _discarded(self, task: Task, seconds: float | None, why: str) -> None:
        """Report a task cancelled while this worker held it (there is no outcome to write)."""
        self.report.finished(task, State.CANCELLED, seconds, why)
