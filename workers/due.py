"""A pool leader's timer for the earliest task due later (scheduled, or retrying after a backoff).

A notification alone cannot start a task created for later: nothing happens in the database when
its time comes. So each pool's leader (the worker that LISTENs, workers/wakeup.py) keeps one
timer for its priority's earliest task due later. It is set from the due index each time the
leader goes idle (backlog.next_due reads one index entry), moved earlier by the "at <epoch>"
notification that a create of a later task sends, and fires at that instant: the leader claims,
and wakes its siblings too when it is busy, or when several tasks are due at that instant. The
claim's own `scheduled_at <= now()` keeps any task from starting early whatever the clocks say.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class DueTimer:
    """Calls `fire` once at the earliest due time it was told of (monotonic clock inside).

    Times from the database are on the server's clock: `set` learns the offset between the
    server's clock and ours, which `at_epoch` uses. `together` says several tasks are due at the
    deadline (then the leader wakes its siblings when it fires).
    """

    def __init__(
        self,
        fire: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._wall = wall
        self.deadline: float | None = None  # on `clock`
        self.epoch: float | None = None  # the same instant on the server's clock
        self.together = False
        self.offset = 0.0  # the server's clock minus ours (same host: about 0)
        self._noted: tuple[float, bool] | None = None  # earliest notified since reading()
        self._handle: asyncio.TimerHandle | None = None

    def reading(self) -> None:
        """A next_due query starts: notifications from now on must survive its answer."""
        self._noted = None

    def set(
        self, due_in: float | None, together: bool = False, server_clock: float | None = None
    ) -> None:
        """next_due's answer: fire `due_in` seconds from now (None: nothing is due later).

        A task notified while the query ran (its answer may predate that task) still counts.
        """
        if server_clock is not None:
            self.offset = server_clock - self._wall()
        epoch = None if due_in is None else self._wall() + self.offset + max(due_in, 0.0)
        if self._noted is not None and (epoch is None or self._noted[0] <= epoch):
            noted, also = self._noted
            epoch, together = noted, also or (together and noted == epoch)
        self._arm(epoch, together)

    def at_epoch(self, epoch: float, together: bool = False) -> None:
        """Tasks due at `epoch` (server clock, seconds) were created: fire then, if earlier;
        `together`: several of them."""
        if self._noted is None or epoch < self._noted[0]:
            self._noted = (epoch, together)
        elif epoch == self._noted[0]:
            self._noted = (epoch, True)
        if self.epoch is None or epoch < self.epoch:
            self._arm(epoch, together)
        elif epoch == self.epoch:
            self.together = True  # a second task for the same instant

    def cancel(self) -> None:
        """Forget the due time (the worker stops)."""
        self._arm(None)

    def _arm(self, epoch: float | None, together: bool = False) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.epoch, self.together = epoch, together
        self.deadline = (
            None if epoch is None else self._clock() + (epoch - self.offset - self._wall())
        )
        if self.deadline is not None:
            self._handle = asyncio.get_running_loop().call_later(
                max(0.0, self.deadline - self._clock()), self._check
            )

    def _check(self) -> None:
        self._handle = None
        if self.deadline is None:
            return
        left = self.deadline - self._clock()
        if left > 0:
            # uvloop's timers have a millisecond grain and may run a fraction early: wait on.
            self._handle = asyncio.get_running_loop().call_later(left, self._check)
            return
        self.deadline = self.epoch = None
        self._fire()


def parse_at(payload: str) -> tuple[float, bool] | None:
    """An "at <epoch> <tag>" payload (asynctask_at in schema.sql) as (epoch, several due then);
    None for any other payload."""
    words = payload.split(" ")
    if len(words) != 3 or words[0] != "at":
        return None
    try:
        epoch = float(words[1])
    except ValueError:
        return None
    if not (epoch == epoch and abs(epoch) < 1e12):  # not NaN, not absurd
        return None
    return epoch, words[2] == "*"
