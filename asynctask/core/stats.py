"""Queue statistics: one snapshot shape, read from the database, cached and shared.

Metrics scrapes, /api/stats and the dashboard's event stream all read the same cached snapshot. It
never counts rows of `tasks`: counts and rates come from the trigger-kept tables (core/counts.py),
the queue lag from one probe of the due index per priority. No aiohttp here: `asynctask stats`
reads the same snapshot without the web stack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiopg

from asynctask.core import backlog, counts, heartbeats, queues
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.models import PRIORITIES, STATES, Priority, State

# One refresh per this many seconds at most, however many scrapes, /api/stats calls or open
# dashboards come in: what the dashboard shows is at most about two of these behind.
STATS_CACHE_SECONDS = 1.0
# A scrape waits this long for the database at most; Prometheus times scrapes out at 10 s.
STATS_TIMEOUT_SECONDS = 2.0
LAST_MINUTE_STATES: Final = (State.COMPLETED, State.FAILED)
# The overview's chart, and its failure count.
CHART_MINUTES: Final = 15
FAILURE_MINUTES: Final = 60
# Moves into these states are the per-minute series (retrying: a failed attempt to be retried).
SERIES_STATES: Final = (State.COMPLETED, State.FAILED, State.RETRYING)


@dataclass(frozen=True)
class Snapshot:
    """Everything the overview shows: counts, lag, rates, failures, pauses, workers."""

    counts: dict[Priority, dict[State, int]]
    queue_lag_seconds: dict[Priority, float]
    last_minute: dict[State, int]
    # Live worker processes per priority (heartbeats.live_workers), and the priorities whose due
    # tasks wait with none of them: a pool of 0 everywhere, or every worker of it gone.
    workers: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    due_without_workers: tuple[Priority, ...] = ()
    per_minute: list[dict[str, Any]] = field(default_factory=list)
    last_hour: dict[str, int] = field(default_factory=dict)
    queues: dict[Priority, queues.QueueState] = field(default_factory=dict)
    supervisors: dict[str, int] = field(default_factory=dict)
    types: list[str] = field(default_factory=list)
    generated_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The body of GET /api/stats (and of `asynctask stats --json`, and of each event)."""
        return {
            "counts": self.counts,
            "queue_lag_seconds": self.queue_lag_seconds,
            "last_minute": self.last_minute,
            "workers": self.workers,
            "due_without_workers": list(self.due_without_workers),
            "per_minute": self.per_minute,
            "last_hour": self.last_hour,
            "paused": {p: q.as_json() for p, q in self.queues.items()},
            "supervisors": self.supervisors,
            "types": self.types,
            "generated_at": None if self.generated_at is None else self.generated_at.isoformat(),
        }


async def read_snapshot(conn: aiopg.Connection) -> Snapshot:
    """Query the database for a snapshot; every priority and state is present (0 if none)."""
    found = await counts.count_tasks(conn)
    scheduled = await backlog.scheduled_counts(conn)
    lag = await backlog.queue_lag(conn)
    moves, now = await counts.task_moves(conn, FAILURE_MINUTES)
    workers = await heartbeats.live_workers(conn, heartbeats.DEAD_AFTER_SECONDS)
    due = await backlog.due_priorities(conn)
    by_state = {priority: dict.fromkeys(STATES, 0) for priority in PRIORITIES}
    for count in found:
        if count.state in by_state[count.priority]:
            by_state[count.priority][State(count.state)] += count.tasks
    for priority, n in scheduled.items():
        # Stored as available (State.SCHEDULED is derived). Two statements, two snapshots: a
        # task that came due or was claimed in between must not make a count negative.
        n = min(n, by_state[priority][State.AVAILABLE])
        by_state[priority][State.SCHEDULED] = n
        by_state[priority][State.AVAILABLE] -= n
    return Snapshot(
        counts=by_state,
        queue_lag_seconds={priority: float(lag.get(priority, 0.0)) for priority in PRIORITIES},
        # The current minute and the one before: 60 to 120 seconds, by the clock's minutes.
        last_minute={state: counts.entered(moves[-2:], state) for state in LAST_MINUTE_STATES},
        per_minute=[_minute(m, now) for m in moves[-CHART_MINUTES:]],
        last_hour={
            "created": sum(m.created for m in moves),
            **{state: counts.entered(moves, state) for state in SERIES_STATES},
        },
        queues=await queues.queue_states(conn),
        workers=workers,
        due_without_workers=tuple(p for p in PRIORITIES if p in due and not workers[p]),
        supervisors=await heartbeats.workers_summary(conn),
        types=sorted({count.type for count in found}),
        generated_at=now,
    )


def _minute(moves: counts.Moves, now: datetime) -> dict[str, Any]:
    seconds = min(60.0, max(1.0, (now - moves.minute).total_seconds()))
    series: dict[str, int] = {state: moves.entered.get(state, 0) for state in SERIES_STATES}
    return {
        "minute": moves.minute.isoformat(),
        "seconds": round(seconds, 3),
        "created": moves.created,
        **series,
        "created_per_second": round(moves.created / seconds, 3),
        "completed_per_second": round(series[State.COMPLETED] / seconds, 3),
    }


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
