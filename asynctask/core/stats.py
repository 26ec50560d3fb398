"""Queue statistics: one snapshot shape, read from db.py, cached for metrics scrapes and /api/stats.

No aiohttp here: `asynctask stats` reads the same snapshot without the web stack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiopg

from asynctask.core import db
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.models import PRIORITIES, STATES, Priority, State

# One table scan per this many seconds at most, however many scrapes or /api/stats calls come in:
# a dashboard refreshing every second on several API replicas must not load the database.
STATS_CACHE_SECONDS = 2.0
# A scrape waits this long for the database at most; Prometheus times scrapes out at 10 s.
STATS_TIMEOUT_SECONDS = 2.0
LAST_MINUTE_STATES: Final = (State.COMPLETED, State.FAILED)


@dataclass(frozen=True)
class Snapshot:
    """Tasks per priority and state, queue lag per priority, and last minute's finished tasks."""

    counts: dict[Priority, dict[State, int]]
    queue_lag_seconds: dict[Priority, float]
    last_minute: dict[State, int]
    # Live worker processes per priority (db.live_workers), and the priorities whose due tasks
    # wait with none of them: a pool of 0 everywhere, or every worker of it gone.
    workers: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    due_without_workers: tuple[Priority, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The body of GET /api/stats (and of `asynctask stats --json`)."""
        return {
            "counts": self.counts,
            "queue_lag_seconds": self.queue_lag_seconds,
            "last_minute": self.last_minute,
            "workers": self.workers,
            "due_without_workers": list(self.due_without_workers),
        }


async def read_snapshot(conn: aiopg.Connection) -> Snapshot:
    """Query the database once for a snapshot; every priority and state is present (0 if none)."""
    rows = await db.task_counts(conn)
    scheduled = await db.scheduled_counts(conn)
    lag = await db.queue_lag(conn)
    workers = await db.live_workers(conn)
    due = await db.due_priorities(conn)
    counts = {priority: dict.fromkeys(STATES, 0) for priority in PRIORITIES}
    last_minute = dict.fromkeys(LAST_MINUTE_STATES, 0)
    for row in rows:
        counts[row["priority"]][row["state"]] = int(row["tasks"])
        if row["state"] in last_minute:
            last_minute[row["state"]] += int(row["last_minute"])
    for priority, n in scheduled.items():
        # Stored as available (State.SCHEDULED is derived). Two statements, two snapshots: a
        # task that came due or was claimed in between must not make a count negative.
        n = min(n, counts[priority][State.AVAILABLE])
        counts[priority][State.SCHEDULED] = n
        counts[priority][State.AVAILABLE] -= n
    return Snapshot(
        counts=counts,
        queue_lag_seconds={priority: float(lag.get(priority, 0.0)) for priority in PRIORITIES},
        last_minute=last_minute,
        workers=workers,
        due_without_workers=tuple(p for p in PRIORITIES if p in due and not workers[p]),
    )


class CachedStats:
    """The latest snapshot, refreshed at most once per `ttl` seconds; failures are cached too.

    Concurrent callers share one refresh, so a burst of scrapes costs one query.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Snapshot]],
        ttl: float = STATS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self.clock = clock
        self._lock = asyncio.Lock()
        self._at: float | None = None
        self._snapshot: Snapshot | None = None
        self._error: Exception | None = None

    @property
    def latest(self) -> Snapshot | None:
        """The last refresh's snapshot, or None if it failed (or none ran yet)."""
        return self._snapshot

    async def get(self) -> Snapshot:
        """A snapshot at most `ttl` seconds old, or the refresh's error (also cached for `ttl`)."""
        async with self._lock:
            if self._at is None or self.clock() - self._at >= self.ttl:
                await self._refresh()
        if self._snapshot is None:
            assert self._error is not None
            # Raised again for every caller in the window: without a reset, each raise would
            # append its frames to the one shared traceback.
            raise self._error.with_traceback(None)
        return self._snapshot

    async def _refresh(self) -> None:
        try:
            async with asyncio.timeout(STATS_TIMEOUT_SECONDS):
                snapshot = await self._fetch()
        except TimeoutError:
            timeout = f"{STATS_TIMEOUT_SECONDS:g}"
            self._set(None, DatabaseUnavailable(f"the statistics query took over {timeout} s"))
        except Exception as exc:  # kept for `ttl` too, so a failing query is not retried per call
            self._set(None, exc)
        else:
            self._set(snapshot, None)

    def _set(self, snapshot: Snapshot | None, error: Exception | None) -> None:
        # Stamped after the query: the window starts when the answer is known.
        self._snapshot, self._error, self._at = snapshot, error, self.clock()
