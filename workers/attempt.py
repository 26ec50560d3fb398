"""One attempt of a coroutine handler: run it, enforce its timeout and the shutdown grace period.

Coroutine handlers run on the worker's loop and can be cancelled. Plain functions run in the
worker's one handler thread, a run of tasks at a time (workers/plain.py); such a thread cannot be
interrupted, so a timed-out one marks the whole process as stuck and the supervisor replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asynctask.core.models import Task
from asynctask.workers.registry import Handler

log = logging.getLogger("asynctask.worker")
SLICE_SECONDS = 1.0


class AttemptRunner:
    """Runs coroutine attempts one at a time and owns the handler thread; `stuck` once a
    handler could not be stopped."""

    def __init__(self, shutdown_timeout: float, thread_name: str) -> None:
        self.shutdown_timeout = shutdown_timeout
        # One thread: a worker runs one task at a time, and a stuck thread is never joined.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=thread_name)
        self.stop_deadline: float | None = None
        self.stuck = False
        self._coroutine: tuple[int, asyncio.Future[Any]] | None = None  # (task id, its future)

    async def run(self, handler: Handler, task: Task) -> tuple[Any, BaseException | None]:
        """Run one attempt: (its return value, None), or (None, its error).

        Enforces the handler's timeout and the shutdown grace period.
        """
        try:
            future = asyncio.get_running_loop().create_task(handler.function(task))
        except Exception as exc:  # a bad signature fails before any await
            return None, exc
        self._coroutine = (task.id, future)
        try:
            return await self._wait(future, handler, task)
        finally:
            self._coroutine = None

    def timeout_error(self, handler: Handler, *, timed_out: bool) -> TimeoutError:
        """The error an attempt ends with when its timeout (or else the shutdown grace) passed."""
        if timed_out:
            return TimeoutError(f"attempt exceeded its timeout of {handler.timeout_seconds:g} s")
        return TimeoutError(
            "worker stopping: attempt cut off after shutdown_timeout_seconds"
            f" = {self.shutdown_timeout:g}"
        )

    def cancel(self, task_id: int) -> bool:
        """Cancel the coroutine handler running this task, if any (a thread cannot be)."""
        if self._coroutine is None or self._coroutine[0] != task_id:
            return False
        return self._coroutine[1].cancel()

    async def _wait(
        self, future: asyncio.Future[Any], handler: Handler, task: Task
    ) -> tuple[Any, BaseException | None]:
        deadline = time.monotonic() + handler.timeout_seconds
        while not future.done():
            limit = min(deadline, self.stop_deadline or deadline)
            if time.monotonic() >= limit:
                return None, await self._abandon(future, handler, task, timed_out=limit == deadline)
            # Short slices so a stop request shortens the wait without a second waiter task.
            await _settled(future, min(limit - time.monotonic(), SLICE_SECONDS))
        if future.cancelled():
            return None, asyncio.CancelledError("the handler was cancelled")
        error = future.exception()
        return (None, error) if error is not None else (future.result(), None)

    async def _abandon(
        self, future: asyncio.Future[Any], handler: Handler, task: Task, *, timed_out: bool
    ) -> BaseException:
        error = self.timeout_error(handler, timed_out=timed_out)
        future.cancel()
        await _settled(future, SLICE_SECONDS)
        if not future.done():
            # A coroutine that ignores cancellation cannot be stopped: record the failure, then
            # let the supervisor replace this process.
            self.stuck = True
            log.error("task %s: %s; this process will be replaced", task.id, error)
        return error

    def close(self) -> None:
        """Let go of the handler thread without waiting for it."""
        self.executor.shutdown(wait=False)


async def _settled(future: asyncio.Future[Any], timeout: float) -> None:
    """Wait until `future` is done or `timeout` seconds pass; never cancels it.

    asyncio.wait({future}, timeout=...) with less per call (no set, no copies): that ran for every
    task, ~16 % of a draining worker's profile samples (bench/README.md).
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(timeout, wake)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
