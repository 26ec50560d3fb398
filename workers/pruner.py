"""Retention: workers delete old finished tasks, expired Idempotency-Key answers and the result
listeners of API processes that died, one pruner at a time across all supervisors.

Every worker tries a session advisory lock on its query connection every PRUNE_EVERY_SECONDS (or
every retention period, when one is shorter than that); the one that gets it deletes in bounded
batches (short statements, short row locks, WAL in small pieces) and releases it. If the
connection is lost mid-prune the server drops the lock with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable

from asynctask.core import creates, result_listeners, upkeep
from asynctask.core.config import RetentionConfig
from asynctask.core.errors import DatabaseUnavailable
from asynctask.workers.connection import QueryConnection, raise_if_cancelled

log = logging.getLogger("asynctask.worker")
PRUNE_EVERY_SECONDS = 60.0  # per worker; tests patch it
SHORTEST_INTERVAL_SECONDS = 1.0  # a retention of a split second must not turn into a busy loop
BATCH_ROWS = 5000
PAUSE_SECONDS = 0.1  # between full batches: lets this worker's claims and acks use the connection
LOCK_KEY = 0x61_73_79_6E_63_70_72  # "asyncpr": one key for every asynctask database user


class Pruner:
    """Deletes finished tasks past their retention, when this worker holds the pruning lock."""

    def __init__(self, conn: QueryConnection, retention: RetentionConfig, slot: str) -> None:
        self.conn = conn
        self.slot = slot
        # completed and cancelled share retention.completed_days; 0 keeps a state forever.
        self.rules = [
            (state, days)
            for state, days in (
                ("completed", retention.completed_days),
                ("cancelled", retention.completed_days),
                ("failed", retention.failed_days),
            )
            if days > 0
        ]
        self.batch = BATCH_ROWS

    def interval(self) -> float:
        """Seconds between tries: PRUNE_EVERY_SECONDS, or the shortest retention if shorter."""
        # A retention of minutes (fractional days) is pruned within about twice that, not a minute.
        shortest = min((days * 86_400 for _, days in self.rules), default=PRUNE_EVERY_SECONDS)
        return min(PRUNE_EVERY_SECONDS, max(SHORTEST_INTERVAL_SECONDS, shortest))

    async def run(self) -> None:
        """Try to prune every interval(), forever (a background task of the worker).

        Also when every task is kept (retention 0): expired Idempotency-Key answers and dead
        result listeners still go.
        """
        every = self.interval()
        # A random phase: the workers of several supervisors started together spread their tries.
        await asyncio.sleep(random.uniform(0, every))
        while True:
            try:
                await self.prune_once()
            except DatabaseUnavailable:
                raise_if_cancelled()  # else: the main loop reports the outage and reconnects
            await asyncio.sleep(every)

    async def prune_once(self) -> dict[str, int] | None:
        """Prune if the lock is free: rows deleted per state (and `idempotency_keys`), or None if
        another pruner runs. Expired keys go whatever the retention of tasks."""
        if not await self.conn.run(upkeep.try_lock, LOCK_KEY):
            return None
        release = True
        try:
            return await self._prune()
        except (DatabaseUnavailable, asyncio.CancelledError):
            # The session is lost (or closed as the worker stops): the lock went with it, and an
            # unlock would only open a new connection.
            release = False
            raise
        finally:
            if release:
                await self.conn.run(upkeep.unlock, LOCK_KEY)

    async def _prune(self) -> dict[str, int]:
        started = time.monotonic()
        deleted: dict[str, int] = {}
        for state, days in self.rules:
            deleted[state] = await self._in_batches(
                functools.partial(upkeep.prune_finished, state=state, older_than_days=days)
            )
        deleted["idempotency_keys"] = await self._in_batches(creates.prune_keys)
        # An API that died leaves its registration: finishes would notify for it forever.
        deleted["result_listeners"] = await self.conn.run(result_listeners.forget_dead)
        if any(deleted.values()):
            log.info(
                "%s: pruned %s in %.1f s",
                self.slot,
                ", ".join(f"{n} {what}" for what, n in deleted.items()),
                time.monotonic() - started,
                extra={"event": "pruned", "slot": self.slot, "deleted": deleted},
            )
        return deleted

    async def _in_batches(self, prune: Callable[..., Awaitable[int]]) -> int:
        """Call `prune(conn, limit=batch)` until it deletes less than a batch; the total."""
        total = 0
        while True:
            n = await self.conn.run(prune, limit=self.batch)
            total += n
            if n < self.batch:
                return total
            await asyncio.sleep(PAUSE_SECONDS)
