"""Buffered acknowledgements: outcomes are written in batches with one `claims.finish` statement.

Flushed when `FLUSH_AT` outcomes wait, `ack_flush_milliseconds` after the first one, and by the
worker loop before it claims or waits. If the database is gone they stay buffered and are retried;
if the process must exit first they are lost and the lease re-runs the task (at-least-once).

The ids of buffered *completions* are mirrored into memory the supervisor shares with this
process: if it is SIGKILLed, its replacement records them instead of re-running tasks that already
ran (a batched ack would otherwise cost one duplicate per buffered completion, not one per kill).
"""

from __future__ import annotations

import asyncio
import logging

from asynctask.core import backoff, claims
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.lifecycle import Outcome
from asynctask.core.models import State
from asynctask.workers.connection import QueryConnection, raise_if_cancelled
from asynctask.workers.link import ACK_CAPACITY, Mirror

log = logging.getLogger("asynctask.worker")
FLUSH_AT = ACK_CAPACITY


def _mirrored(outcome: Outcome) -> bool:
    # A completion with a result is not: its replacement could record it only without the
    # result, so the task runs again instead and its result is kept (h/run, README "Results").
    return outcome.state is State.COMPLETED and outcome.result is None


class AckBuffer:
    """Outcomes waiting to be written, and the claim tokens they still hold."""

    def __init__(
        self,
        conn: QueryConnection,
        flush_ms: int,
        mirror: Mirror,
        flush_at: int = FLUSH_AT,
    ) -> None:
        self.conn = conn
        self.flush_ms = flush_ms
        self.flush_at = flush_at
        self.mirror = mirror
        self.mirror[0] = 0
        self.pending: list[Outcome] = []
        self._nonempty = asyncio.Event()
        self._lock = asyncio.Lock()

    def held(self) -> tuple[list[int], set[str]]:
        """Task ids and claim tokens of buffered outcomes: their leases must still be extended."""
        return [o.task_id for o in self.pending], {o.token for o in self.pending}

    async def record(self, outcome: Outcome) -> None:
        """Buffer one outcome; flush at once when the buffer is full."""
        self.pending.append(outcome)
        count = self.mirror[0]
        if _mirrored(outcome) and count < len(self.mirror) - 1:
            # The id first, then the count: a kill between the two loses one mirror entry (that
            # task re-runs), never exposes a stale one.
            self.mirror[count + 1] = outcome.task_id
            self.mirror[0] = count + 1
        self._nonempty.set()
        if len(self.pending) >= self.flush_at:
            await self.try_flush()

    async def flush(self) -> None:
        """Write everything buffered; raises DatabaseUnavailable and keeps it if that fails."""
        # The lock keeps two flushes (timer and loop) from sending the same outcomes twice.
        async with self._lock:
            if not self.pending:
                return
            outcomes = list(self.pending)
            applied = await self.conn.run(claims.finish, outcomes)
            del self.pending[: len(outcomes)]
            self._remirror()
            if not self.pending:
                self._nonempty.clear()
        if applied < len(outcomes):
            log.warning(
                "%d of %d outcomes were not recorded: those claims were lost (lease expired and"
                " the tasks were rescued, or they were cancelled meanwhile)",
                len(outcomes) - applied,
                len(outcomes),
            )

    def _remirror(self) -> None:
        # Written ids may linger past the count while this runs; replaying one is a no-op (the
        # task is no longer `running` under this worker's name).
        completed = [o.task_id for o in self.pending if _mirrored(o)]
        completed = completed[: len(self.mirror) - 1]
        for index, task_id in enumerate(completed, start=1):
            self.mirror[index] = task_id
        self.mirror[0] = len(completed)

    async def try_flush(self) -> bool:
        """Flush; on a database outage log it and return False (outcomes stay buffered)."""
        try:
            await self.flush()
        except DatabaseUnavailable as exc:
            raise_if_cancelled()
            log.warning("could not record %d outcomes yet (%s)", len(self.pending), exc)
            return False
        return True

    async def run_timer(self) -> None:
        """Flush `flush_ms` after the buffer stops being empty (a background task)."""
        while True:
            await self._nonempty.wait()
            await asyncio.sleep(self.flush_ms / 1000)
            if not await self.try_flush():
                await asyncio.sleep(1.0)

    async def final_flush(self, tries: int = 3) -> None:
        """Last flush at exit: a few quick tries, then report what is lost."""
        for attempt in range(1, tries + 1):
            if await self.try_flush():
                return
            if attempt < tries:
                await asyncio.sleep(backoff.restart_delay(attempt))
        log.error(
            "%d outcomes are lost; their tasks will run again once their lease expires",
            len(self.pending),
        )
