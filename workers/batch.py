"""One claimed batch, run in order: coroutine handlers on the loop, plain functions in a run.

Consecutive rows whose handler is a plain function go to the handler thread together
(workers/plain.py); a coroutine handler's row runs on the loop. Before each row the batch checks
that the worker may go on (not stopping, not stuck, its priority not paused); when it may not,
the rows not yet started are handed back without spending an attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asynctask.core import claims
from asynctask.core.config import Config
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.lifecycle import Event, Outcome, decide
from asynctask.workers import prefetch
from asynctask.workers.acks import AckBuffer
from asynctask.workers.attempt import AttemptRunner
from asynctask.workers.connection import QueryConnection
from asynctask.workers.execute import TaskExecutor
from asynctask.workers.link import SlotLink
from asynctask.workers.plain import PlainRun

log = logging.getLogger("asynctask.worker")


class BatchRunner:
    """Runs a worker's claimed batches; remembers the average task time for the next claim."""

    def __init__(
        self,
        config: Config,
        conn: QueryConnection,
        link: SlotLink,
        executor: TaskExecutor,
        acks: AckBuffer,
        *,
        may_go_on: Callable[[], bool],
        must_stop: Callable[[], Awaitable[bool]],
    ) -> None:
        self.config = config
        self.conn = conn
        self.link = link
        self.executor = executor
        self.attempts: AttemptRunner = executor.attempts
        self.acks = acks
        # Plain attribute reads, no await: the handler thread asks it before each row, and the
        # loop too, so that the common case (no stop, no pause announced) costs no await.
        self.may_go_on = may_go_on
        self.must_stop = must_stop  # the full answer: reads the pause flag again if announced
        self.token: str | None = None  # the claim token of the batch running now
        self.rows: list[dict[str, Any]] = []  # and its rows: their leases are kept until it ends
        self.avg_task_seconds = 0.0

    async def run(self, rows: list[dict[str, Any]], token: str) -> None:
        """Run the claimed `rows` in order; hand back those it may not start."""
        self.token, self.rows = token, rows
        started, index = time.monotonic(), 0
        try:
            while index < len(rows):
                if not self.may_go_on() and await self.must_stop():
                    await self._release(rows[index:], token)
                    break
                plain = self._plain_rows(rows, index)
                if plain:
                    index += await self._run_plain(rows[index : index + plain], token)
                else:
                    await self._run_one(rows[index], token)
                    index += 1
        finally:
            self.token, self.rows = None, []
            self.avg_task_seconds = prefetch.update_average(
                self.avg_task_seconds, time.monotonic() - started, index
            )

    async def _run_plain(self, rows: list[dict[str, Any]], token: str) -> int:
        """Run consecutive plain-function rows in the handler thread; how many were started."""
        run = PlainRun(self.executor, self.attempts, self.may_go_on)
        try:
            return await run.run(rows, token, self.acks.record)
        finally:
            self.link.idle()

    def _plain_rows(self, rows: list[dict[str, Any]], start: int) -> int:
        """How many rows from `start` on are for the handler thread (not a coroutine handler)."""
        # Indexes, not rows[start:]: a batch of coroutine rows asks this once per row, and a
        # slice would copy the rest of the batch each time.
        handlers = self.executor.handlers
        end = start
        while end < len(rows):
            handler = handlers.get(rows[end]["type"])
            if handler is not None and handler.is_async:
                break
            end += 1
        return end - start

    async def _run_one(self, row: dict[str, Any], token: str) -> None:
        try:
            outcome = await self.executor.run(row, token)
            if outcome is not None:  # None: cancelled meanwhile, nothing to write
                await self.acks.record(outcome)
        finally:
            self.link.idle()

    async def _release(self, rows: list[dict[str, Any]], token: str) -> None:
        """Hand back claimed tasks that never started: their attempts are not counted."""
        retry = self.config.retry
        outcomes = [
            Outcome(
                row["id"],
                token,
                decide(Event.NOT_STARTED, row["attempts"], row["max_attempts"], retry),
            )
            for row in rows
        ]
        try:
            released = await self.conn.run(claims.finish, outcomes)
        except DatabaseUnavailable as exc:
            log.warning("could not release %d unstarted tasks (%s)", len(rows), exc)
        else:
            fields = {"event": "released", "slot": self.link.slot.name, "count": released}
            log.info("released %d claimed but unstarted tasks", released, extra=fields)
