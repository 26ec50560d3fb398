"""The watch, kept by one worker per supervisor (its first slot): dead hosts, counts, old rows.

Every WATCH_SECONDS it looks for supervisors none of whose workers beat lately (core/heartbeats.py)
and rescues their running tasks at once, instead of when their leases expire: it takes them over
under a fresh claim token, charges each dead process one attempt (its lowest claimed id, as for
an expired lease) and hands back the rest, through the same decision and finish as any outcome.
A host that was only slow loses nothing it can still write: its token no longer matches. The
watch also folds the count deltas into their totals and drops old registry rows.
"""

from __future__ import annotations

import logging
import uuid

from asynctask.core import claims, counts, heartbeats
from asynctask.core.config import Config
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.lifecycle import Event
from asynctask.workers.connection import QueryConnection, raise_if_cancelled
from asynctask.workers.recovery import blame_lowest, outcomes
from asynctask.workers.ticks import Ticks

log = logging.getLogger("asynctask.worker")
WATCH_SECONDS = 1.0
COMPACT_EVERY = 2  # watches: fold the count deltas every 2 s
TIDY_EVERY = 30  # watches: old registry rows, zero counts, vacuum of the deltas


class Watch:
    """Rescues dead supervisors' tasks and keeps the dashboard's tables small."""

    def __init__(
        self,
        conn: QueryConnection,
        config: Config,
        own: str,
        supervisor: int,
        ticks: Ticks | None = None,
    ) -> None:
        self.conn = conn
        self.ticks = ticks or Ticks()
        self.config = config
        self.own = own  # our locked_by: host:pid:slot
        self.host = own.rsplit(":", 2)[0]
        self.supervisor = supervisor

    async def run(self) -> None:
        """Watch forever (a background task of the worker)."""
        for n in range(1, 2**62):
            await self.ticks.sleep(WATCH_SECONDS)
            try:
                await self.rescue()
                if n % COMPACT_EVERY == 0:
                    await self.conn.run(counts.compact)
                if n % TIDY_EVERY == 0:
                    await self.conn.run(heartbeats.forget_old_workers)
                    await self.conn.run(counts.tidy)
            except DatabaseUnavailable:
                raise_if_cancelled()  # else: the main loop reports the outage and reconnects

    async def rescue(self) -> int:
        """Settle the running tasks of every dead supervisor; how many tasks."""
        total = 0
        for dead in await self.conn.run(heartbeats.dead_supervisors):
            if (dead.host, dead.pid) == (self.host, self.supervisor):
                continue  # our own rows are late: we are alive, so the database is slow
            total += await self._rescue(dead)
        return total

    async def _rescue(self, dead: heartbeats.DeadSupervisor) -> int:
        token = str(uuid.uuid4())
        held = await self.conn.run(
            claims.reclaim_lockers,
            list(dead.lockers),
            locked_by=self.own,
            token=token,
            lease_seconds=self.config.lease_seconds,
        )
        reason = (
            "worker {holder} went silent with its supervisor"
            f" (pid {dead.pid} on {dead.host}, no heartbeat for {dead.silent_seconds:.1f} s)"
        )
        settled = outcomes(blame_lowest(held, Event.WORKER_CRASHED, reason), token, self.config)
        await self.conn.run(claims.finish, settled)
        await self.conn.run(heartbeats.mark_rescued, dead)
        fields = {"event": "rescued", "host": dead.host, "pid": dead.pid, "count": len(settled)}
        log.warning(
            "supervisor pid %s on %s has been silent for %.1f s: rescued its %d running tasks",
            dead.pid,
            dead.host,
            dead.silent_seconds,
            len(settled),
            extra=fields,
        )
        return len(settled)
