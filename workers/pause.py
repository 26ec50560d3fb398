"""Whether this worker's priority is paused, without a query on every claim.

The API's pause or resume NOTIFYs `asynctask_queues`; a pool's leader hears it on its one
connection and passes it to its siblings through their wake-up pipes (workers/wakeup.py). Each
then marks its state stale and reads it once before its next claim. Every heartbeat also answers
the state (the fallback for a notification lost while a leader was being replaced). A version
number orders the two: an older read never undoes a newer one.
"""

from __future__ import annotations

from asynctask.core import queues
from asynctask.core.models import Priority
from asynctask.workers.connection import QueryConnection


class PauseState:
    """One worker's view of its priority's pause flag."""

    def __init__(self, priority: Priority) -> None:
        self.priority = priority
        self.paused = False
        self.version = -1
        self.stale = True  # read it before the first claim

    @property
    def maybe(self) -> bool:
        """Paused, or a change was announced: only then is `current` worth awaiting (per task)."""
        return self.paused or self.stale

    def apply(self, paused: bool, version: int) -> None:
        """Take a state read from the database, unless a newer one is already known."""
        if version >= self.version:
            self.paused, self.version = paused, version

    def changed(self) -> None:
        """A pause or resume was announced: read the state again before the next claim."""
        self.stale = True

    def heard(self, payload: str) -> bool:
        """A notification on asynctask_queues: True if it concerns this priority ("" = maybe)."""
        return payload in ("", self.priority)

    async def current(self, conn: QueryConnection) -> bool:
        """The flag, read again first if it is stale (one small query per announced change)."""
        if self.stale:
            self.stale = False  # a change announced during the read marks it stale again
            self.apply(*await conn.run(queues.queue_state, self.priority))
        return self.paused
