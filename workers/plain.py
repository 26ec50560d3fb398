"""Plain-function handlers: a run of claimed tasks handed to the handler thread at once.

A coroutine handler runs on the worker's loop. A plain function cannot: while it ran, the loop
could not beat, extend leases, hear signals or enforce a timeout. So it runs in the worker's one
handler thread. Handing that thread one task at a time cost a round trip between the threads per
task (two thread wake-ups, two futures): 120 µs of CPU per no-op task against 40 µs for a
coroutine. Instead the loop hands the thread every consecutive claimed row whose handler is a
plain function; the thread runs them one after another and passes their outcomes back as they
come, waking the loop once per heap of ready outcomes rather than once per task. The loop records
them meanwhile (acknowledgements are written while the next tasks run), keeps beating and
extending leases, and enforces the timeouts exactly as for a single task: a handler past its
timeout or the shutdown grace is abandoned, its outcome is a TimeoutError, the rows after it are
left unstarted, and the process is replaced (a thread cannot be interrupted).

Before each row the thread asks `keep_going` (not stopping, not stuck, no pause announced); when
it may not go on it stops, and the loop decides about the rows it did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from asynctask.core.lifecycle import Outcome
from asynctask.workers.attempt import SLICE_SECONDS, AttemptRunner
from asynctask.workers.execute import Prepared, TaskExecutor

log = logging.getLogger("asynctask.worker")
_ABANDONED: Final = object()


@dataclass(frozen=True, slots=True)
class _Running:
    """The task the thread runs now: when it started, and when it must have ended."""

    step: Prepared
    started: float  # time.perf_counter()
    deadline: float  # time.monotonic()


class PlainRun:
    """One run of consecutive plain-function rows of a claim, executed by the handler thread."""

    def __init__(
        self,
        executor: TaskExecutor,
        attempts: AttemptRunner,
        keep_going: Callable[[], bool],
    ) -> None:
        self.executor = executor
        self.attempts = attempts
        self.keep_going = keep_going
        self.started = 0  # rows the thread began
        self._lock = threading.Lock()
        self._ready: deque[Outcome] = deque()
        self._running: _Running | None = None
        self._finished = False
        self._abandoned = False
        self._signalled = False
        self._error: BaseException | None = None  # a defect of ours in the thread
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    async def run(
        self,
        rows: Sequence[dict[str, Any]],
        token: str,
        record: Callable[[Outcome], Awaitable[None]],
    ) -> int:
        """Run `rows` in the thread, `record` each outcome; how many rows were started."""
        self._loop.run_in_executor(self.attempts.executor, self._work, rows, token)
        while True:
            await self._sleep(self._wait_seconds())
            self._wake.clear()
            self._signalled = False
            while self._ready:
                await record(self._ready.popleft())
            with self._lock:
                finished, running = self._finished, self._running
            if finished and not self._ready:
                if self._error is not None:
                    raise self._error  # as it would have on the loop: the worker dies of it
                return self.started
            if running is not None and time.monotonic() >= self._limit(running):
                outcome = self._abandon(running)
                if outcome is not None:
                    await record(outcome)
                return self.started

    # --- the loop's side -------------------------------------------------------------------------

    def _limit(self, running: _Running) -> float:
        stop = self.attempts.stop_deadline
        return running.deadline if stop is None else min(running.deadline, stop)

    def _wait_seconds(self) -> float:
        running = self._running
        if running is None:
            return SLICE_SECONDS
        return max(0.0, min(SLICE_SECONDS, self._limit(running) - time.monotonic()))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _abandon(self, running: _Running) -> Outcome | None:
        with self._lock:
            if self._running is not running:  # it returned meanwhile: its outcome is coming
                return None
            self._abandoned = True
        timed_out = running.deadline <= self._limit(running)
        error = self.attempts.timeout_error(running.step.handler, timed_out=timed_out)
        self.attempts.stuck = True
        log.error("task %s: %s; this process will be replaced", running.step.task.id, error)
        seconds = time.perf_counter() - running.started
        return self.executor.conclude(running.step, None, error, seconds)

    # --- the thread's side -----------------------------------------------------------------------

    def _work(self, rows: Sequence[dict[str, Any]], token: str) -> None:
        try:
            for row in rows:
                if not self.keep_going():
                    break
                self.started += 1
                outcome = self._one(row, token)
                if outcome is _ABANDONED:
                    return
                if isinstance(outcome, Outcome):
                    self._ready.append(outcome)
                    self._signal()
        except BaseException as exc:
            self._error = exc
        finally:
            with self._lock:
                self._finished = True
                abandoned = self._abandoned
            if not abandoned:
                self._signal(always=True)

    def _one(self, row: dict[str, Any], token: str) -> Outcome | object | None:
        step = self.executor.prepare(row, token)
        if not isinstance(step, Prepared):
            return step
        cancels = self.executor.cancels
        started = time.perf_counter()
        deadline = time.monotonic() + step.handler.timeout_seconds
        with self._lock:
            self._running = _Running(step, started, deadline)
        cancels.running(step.task.id, token)
        value: Any = None
        error: BaseException | None = None
        try:
            value = step.handler.function(step.task)
        except BaseException as exc:  # SystemExit included: it ends this attempt, not the thread
            error = exc
        finally:
            cancels.idle()
        with self._lock:
            if self._abandoned:
                return _ABANDONED
            self._running = None
        return self.executor.conclude(step, value, error, time.perf_counter() - started)

    def _signal(self, always: bool = False) -> None:
        # At most one wake-up per heap of ready outcomes: the loop resets the flag before it
        # takes them, and an outcome appended before that reset is taken with them.
        if self._signalled and not always:
            return
        self._signalled = True
        with contextlib.suppress(RuntimeError):  # the loop closed: the process is leaving
            self._loop.call_soon_threadsafe(self._wake.set)
