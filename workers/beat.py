"""A worker's heartbeat into the registry (core/heartbeats.py): a few writes per second in all.

Each worker writes its own row every HEARTBEAT_SECONDS: its slot, pid, what it is doing, and its
supervisor's host and pid (the supervisor has no database connection, so its facts ride along on
its workers' rows). The answer carries the priority's pause flag: the fallback for a missed
notification. A worker that stops for good removes its row; one that crashes leaves it to age.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable

from asynctask.core import heartbeats
from asynctask.core.errors import DatabaseUnavailable
from asynctask.workers.connection import QueryConnection, raise_if_cancelled
from asynctask.workers.link import RECOVERING
from asynctask.workers.pause import PauseState
from asynctask.workers.slots import Slot, supervisor_pid
from asynctask.workers.ticks import Ticks

FORGET_TIMEOUT_SECONDS = 2.0  # a stopping worker does not wait longer for its row's removal
Status = Callable[[], tuple[str, int | None]]


class Heartbeat:
    """Writes this worker's registry row until cancelled, and removes it on a clean stop."""

    def __init__(
        self,
        conn: QueryConnection,
        slot: Slot,
        identity: tuple[str, str],
        status: Status,
        pause: PauseState,
        ticks: Ticks,
    ) -> None:
        host, locked_by = identity
        self.conn = conn
        self.status = status
        self.pause = pause
        self.ticks = ticks
        self.beat = heartbeats.Beat(
            host, supervisor_pid(), slot.name, slot.priority, os.getpid(), locked_by, "starting"
        )
        self.beats = 0
        self._early = asyncio.Event()

    async def run(self) -> None:
        """Beat every HEARTBEAT_SECONDS (on the grid), or sooner when asked, forever."""
        while True:
            self._early.clear()
            try:
                await self.once()
            except DatabaseUnavailable:
                raise_if_cancelled()  # else: the main loop reports the outage and reconnects
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self.ticks.next(heartbeats.HEARTBEAT_SECONDS)):
                    await self._early.wait()

    def soon(self) -> None:
        """Beat now rather than at the next period: the status changed in a way worth showing."""
        self._early.set()

    async def once(self) -> None:
        """One beat: write the row, take the pause flag from the answer."""
        status, task_id = self.status()
        beat = dataclasses.replace(self.beat, status=status, task_id=task_id)
        self.pause.apply(*await self.conn.run(heartbeats.heartbeat, beat))
        self.beats += 1

    async def forget(self) -> None:
        """Remove the row (a clean stop); a database that does not answer soon is left alone."""
        with contextlib.suppress(DatabaseUnavailable, TimeoutError):
            async with asyncio.timeout(FORGET_TIMEOUT_SECONDS):
                await self.conn.run(heartbeats.forget_worker, self.beat)


def slot_status(doing: int, stopping: bool, paused: bool) -> tuple[str, int | None]:
    """What a heartbeat reports: busy (with the task), stopping, recovering, paused or idle."""
    if doing > 0:
        return "busy", doing
    if stopping:
        return "stopping", None
    if doing == RECOVERING:
        return "recovering", None
    return ("paused" if paused else "idle"), None
