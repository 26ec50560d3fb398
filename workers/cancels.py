"""Cancelling a running task: how its worker hears of it, and what it does then.

`POST /api/tasks/{id}/cancel` ends a running task in the database at once (queries.sql:
cancel_task) and NOTIFYs tasks_cancel with "<id> <locked_by>". Only pool leaders LISTEN, on the
connection they already LISTEN on for new tasks: PostgreSQL wakes every listening backend of a
database for every notification, so a listener more on each worker would cost every create (see
workers/wakeup.py), while a channel more on a leader costs nothing. A leader that holds the task
cancels it itself; one whose sibling holds it (same host, same pool, named in locked_by) passes
the id on through that sibling's wake-up pipe. The worker then cancels a coroutine handler at
once; a plain function cannot be interrupted and runs to its end. Either way its outcome is not
written: the task is already `cancelled`, and finish would find no claim to apply it to.

A notification can be missed (a leader being replaced, a LISTEN being re-established), so a
worker whose coroutine has run for CHECK_SECONDS also asks the database, every CHECK_SECONDS,
whether it still holds the task: the backstop, not the way cancels normally arrive.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from asynctask.core import claims
from asynctask.core.errors import DatabaseUnavailable
from asynctask.workers.attempt import AttemptRunner
from asynctask.workers.connection import QueryConnection, raise_if_cancelled
from asynctask.workers.slots import Slot
from asynctask.workers.ticks import Ticks

log = logging.getLogger("asynctask.worker")
REMEMBERED: Final = 1000  # cancelled ids a worker keeps in mind (it holds at most a claim's worth)
CHECK_SECONDS: Final = 5.0


class CancelBoard:
    """The cancel requests this worker heard of, and the task it is running now."""

    def __init__(self, attempts: AttemptRunner) -> None:
        self.attempts = attempts
        self._ids: OrderedDict[int, None] = OrderedDict()
        self.current: tuple[int, str, float] | None = None  # (task id, claim token, started)

    def request(self, task_id: int) -> None:
        """Task `task_id` was cancelled: stop it if it runs here, skip it if it has not started."""
        self._ids[task_id] = None
        if len(self._ids) > REMEMBERED:
            self._ids.popitem(last=False)
        if self.attempts.cancel(task_id):
            log.info("task %s cancelled: its handler is stopped", task_id)

    def requested(self, task_id: int) -> bool:
        """True once a cancel of this task reached this worker."""
        return task_id in self._ids

    def running(self, task_id: int, token: str) -> None:
        """The executor starts this task's handler now."""
        self.current = (task_id, token, time.monotonic())

    def idle(self) -> None:
        """No handler runs."""
        self.current = None


class CancelRouter:
    """A pool leader's side: each tasks_cancel notification goes to the worker that holds it."""

    def __init__(
        self, board: CancelBoard, locked_by: str, slot: Slot, to_sibling: Callable[[int, int], None]
    ) -> None:
        self.board = board
        self.locked_by = locked_by
        self.host = socket.gethostname()
        self.prefix = f"{slot.priority}_"
        self.to_sibling = to_sibling  # (sibling's slot index, task id)

    def notified(self, payload: str) -> None:
        """Handle one notification: "<task id> <locked_by of the worker that ran it>"."""
        task_id, _, holder = payload.partition(" ")
        if not task_id.isdigit():
            return
        if holder == self.locked_by:
            self.board.request(int(task_id))
            return
        host, _, slot = holder.rpartition(":")
        host = host.rpartition(":")[0]
        number = slot.removeprefix(self.prefix)
        if host == self.host and slot.startswith(self.prefix) and number.isdigit():
            index = int(number) - 1
            if index > 0:  # index 0 is a leader: the one of another supervisor on this host
                self.to_sibling(index, int(task_id))


async def watch(conn: QueryConnection, board: CancelBoard, ticks: Ticks) -> None:
    """The backstop (a background task): ask the database about a long-running handler's task."""
    while True:
        await ticks.sleep(CHECK_SECONDS)
        current = board.current
        if current is None or time.monotonic() - current[2] < CHECK_SECONDS:
            continue
        task_id, token, _ = current
        try:
            held = await conn.run(claims.still_held, task_id, token)
        except DatabaseUnavailable:
            raise_if_cancelled()  # else: the main loop reports the outage and reconnects
            continue
        if not held and board.current == current:
            log.info("task %s is no longer held by this worker (cancelled or rescued)", task_id)
            board.request(task_id)
