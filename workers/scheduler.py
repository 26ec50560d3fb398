"""The periodic-task scheduler: enqueues each tick of each `schedules:` entry, once in all.

Who runs it: one worker per supervisor, its first slot (high_1 by default), as a background task
on the connection it already has (the supervisor has no event loop and no database, by design).
Every supervisor runs one, on one host or many, and none is elected: the database decides. Each
tick's task is inserted by the statement that moves that schedule's cursor forward to the tick
(queries.sql: fire_schedule), under the cursor row's lock, so the schedulers that race for a tick
make one task between them, and one whose clock runs ahead makes nothing early.

How it sleeps: until the earliest next tick of all its schedules (at most MAX_SLEEP_SECONDS at a
time, in case the wall clock is stepped), on the database's clock: each statement answers the
server's now, and the scheduler keeps its offset from its own. No polling between ticks.

Missed ticks: when it starts (or comes back after losing the database), the ticks between a
schedule's cursor and that moment were missed by everyone; `catch_up` says how many of the latest
run (1, the default: only the latest). Ticks after it started run all, even late (a busy loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from asynctask.core import periodic
from asynctask.core.config import Config
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.schedules import CATCH_UP_MAX, Schedule
from asynctask.workers.connection import QueryConnection, raise_if_cancelled
from asynctask.workers.slots import Slot, slots_for

log = logging.getLogger("asynctask.scheduler")
MAX_SLEEP_SECONDS: Final = 60.0
RETRY_SECONDS: Final = 1.0


class Scheduler:
    """Enqueues the ticks of `schedules`, sharing the decision with every other scheduler."""

    def __init__(self, conn: QueryConnection, schedules: Sequence[Schedule], name: str) -> None:
        self.conn = conn
        self.schedules = tuple(schedules)
        self.name = name
        self.offset = 0.0  # the database's clock minus ours, in seconds
        self.cursors: dict[str, datetime] = {}
        self.since = datetime.now(
            UTC
        )  # when this scheduler last (re)joined: older ticks are missed

    @classmethod
    def for_slot(cls, config: Config, slot: Slot, conn: QueryConnection) -> Scheduler | None:
        """The scheduler of a supervisor's first worker slot; None for the others (or none set)."""
        if not config.schedules or slots_for(config.priority_queues)[0].name != slot.name:
            return None
        return cls(conn, config.schedules, slot.name)

    async def run(self) -> None:
        """Enqueue ticks until cancelled (a background task of the worker)."""
        while True:
            try:
                await self.join()
                while True:
                    await self.fire_due()
                    await asyncio.sleep(self.sleep_seconds())
            except DatabaseUnavailable:
                raise_if_cancelled()  # else: the worker's loop reports it and reconnects
                await asyncio.sleep(RETRY_SECONDS)

    def now(self) -> datetime:
        """Now on the database's clock (as last measured)."""
        return datetime.fromtimestamp(time.time() + self.offset, UTC)

    async def join(self) -> None:
        """Register the schedules, read their cursors and the clock; later ticks are live."""
        names = [s.name for s in self.schedules]
        sent = time.time()
        self._clock(await self.conn.run(periodic.register_schedules, names), sent)
        states = await self.conn.run(periodic.schedule_states, names)
        self.cursors = {name: state["last_tick_at"] for name, state in states.items()}
        self.since = self.now()

    async def fire_due(self) -> int:
        """Enqueue every schedule's due ticks; how many schedules had some."""
        now, fired = self.now(), 0
        for schedule in self.schedules:
            ticks = self.due(schedule, now)
            if ticks:
                await self._fire(schedule, ticks)
                fired += 1
        return fired

    def due(self, schedule: Schedule, now: datetime) -> list[datetime]:
        """The ticks to enqueue now: the latest `catch_up` missed ones, and all live ones."""
        cursor = self.cursors.get(schedule.name)
        if cursor is None:
            return []
        missed: list[datetime] = []
        if cursor < self.since:
            missed, older = schedule.ticks_between(cursor, min(self.since, now), schedule.catch_up)
            if older:
                log.warning(
                    "schedule %s: more than %d ticks were missed while no scheduler ran; the"
                    " latest %d run (catch_up)",
                    schedule.name,
                    schedule.catch_up,
                    schedule.catch_up,
                    extra={"event": "schedule caught up", "schedule": schedule.name},
                )
        live, _ = schedule.ticks_between(max(cursor, self.since), now, CATCH_UP_MAX)
        return missed + live

    async def _fire(self, schedule: Schedule, ticks: list[datetime]) -> None:
        sent = time.time()
        fired = await self.conn.run(periodic.fire_schedule, schedule, ticks)
        self._clock(fired.now, sent)
        if fired.was is None:  # its cursor row is gone (deleted by hand): register it again
            await self.join()
            return
        self.cursors[schedule.name] = fired.moved_to or max(fired.was, self.cursors[schedule.name])
        if fired.moved_to is not None:
            log.info(
                "schedule %s: enqueued the tick of %s",
                schedule.name,
                fired.moved_to.isoformat(),
                extra={"event": "schedule fired", "schedule": schedule.name},
            )

    def sleep_seconds(self) -> float:
        """Seconds until the earliest next tick, on the database's clock."""
        now = self.now()
        upcoming = [
            tick
            for schedule in self.schedules
            if (tick := schedule.next_tick(max(self.cursors.get(schedule.name, now), now)))
        ]
        if not upcoming:
            return MAX_SLEEP_SECONDS
        wait = (min(upcoming) - now).total_seconds()
        return min(max(wait, 0.0), MAX_SLEEP_SECONDS)

    def _clock(self, database_now: datetime, sent: float) -> None:
        # The statement's now() was taken when it started on the server: about midway between
        # sending and hearing back. An error either way costs milliseconds, never an early task
        # (the statement refuses ticks after its own now()).
        self.offset = database_now.timestamp() - (sent + time.time()) / 2
