"""Turn NOTIFY payloads into wake-ups without waking every idle sibling into the same claim.

Every LISTENer of a channel gets every notification. When a single create names its task id, the
pool's idle workers would all claim at once, one would win, and the others' claims would compete
with the winner for the CPU and the database (about 1 ms of a 4-worker idle wake-up on 2 cores).
So the id picks one worker of the pool, which claims at once; its siblings claim FOLLOW_SECONDS
later, which still finds the task quickly when the chosen worker is busy, dead or restarting. A
notification without an id (a batch, a retry sweep, a re-established LISTEN) wakes everyone now.
"""

from __future__ import annotations

import asyncio

# Long enough for the chosen worker's claim (~1 ms idle) to finish first; short enough that a task
# whose chosen worker is busy still starts within a few milliseconds on an idle sibling.
FOLLOW_SECONDS = 0.002


class Wakeup:
    """Sets `event` for a notification: at once if it is this worker's turn, else a bit later."""

    def __init__(
        self, event: asyncio.Event, index: int, pool_size: int, follow: float = FOLLOW_SECONDS
    ) -> None:
        self.event = event
        self.index = index
        self.pool_size = pool_size
        self.follow = follow
        self._later: asyncio.TimerHandle | None = None

    def notified(self, payload: str) -> None:
        """Handle one notification's payload ("" or a task id)."""
        if self.event.is_set():
            return
        if (
            self.pool_size > 1
            and payload.isascii()
            and payload.isdigit()
            and int(payload) % self.pool_size != self.index
        ):
            if self._later is None:
                self._later = asyncio.get_running_loop().call_later(self.follow, self.now)
            return
        self.now()

    def now(self) -> None:
        """Wake the worker now."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self.event.set()
