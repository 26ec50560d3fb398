"""Wake one worker per new task, not its whole pool.

Every LISTENer of a channel gets every notification, and waking all of a pool's idle workers (and
their backends) for one task slowed the one that ran it: on 2 cores, 4 listeners cost ~0.4 ms of
the idle wake-up against 1 (bench/README.md). So only a pool's first worker, its leader, LISTENs
on tasks_<priority>. It claims alone when it is idle and the notification names one task (a
single create). Otherwise, when it is busy or already about to claim, or the notification stands
for any number of tasks (a batch, a re-established LISTEN, a bare NOTIFY sent from SQL), it also
wakes its siblings through pipes: one per sibling slot, made once by the supervisor and handed to
every process of that slot, so a restarted worker is reachable at once. A notification stays a
hint: every worker also polls, which is how tasks are found while a leader is being replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

from asynctask.workers.slots import Slot

_WAKE = b"\x01"  # claim now
_QUEUE_CHANGED = b"\x02"  # the pool was paused or resumed: read its state again, then claim


@dataclass(frozen=True)
class WakePipes:
    """A process's pipe ends: `mine` to be woken through (a sibling), `siblings` (the leader's)."""

    mine: Connection | None = None
    siblings: tuple[Connection, ...] = ()


def pool_pipes(ctx: BaseContext, slots: Sequence[Slot]) -> dict[str, WakePipes]:
    """For each slot name, its ends of its pool's pipes: one pipe per slot past the first."""
    pipes = {slot.name: ctx.Pipe(duplex=False) for slot in slots if slot.index > 0}
    for pipe in pipes.values():
        for end in pipe:
            # The flag belongs to the pipe, not to this process's descriptor: the children's
            # copies never block either (a full pipe is not worth waiting for).
            os.set_blocking(end.fileno(), False)
    ends: dict[str, WakePipes] = {}
    for slot in slots:
        if slot.index > 0:
            ends[slot.name] = WakePipes(mine=pipes[slot.name][0])
        else:
            siblings = [pipes[s.name][1] for s in slots if s.priority == slot.priority and s.index]
            ends[slot.name] = WakePipes(siblings=tuple(siblings))
    return ends


class Wakeup:
    """Sets `event` for a notification or a sibling's nudge; a leader passes work on when it must.

    `idle` is True while the worker waits for work (set by the worker around its wait). A leader
    also passes on "the pool was paused or resumed" (`queue_changed`): a sibling that reads that
    byte calls its own `queue_changed`.
    """

    def __init__(
        self,
        event: asyncio.Event,
        pipes: WakePipes | None = None,
        queue_changed: Callable[[], None] | None = None,
    ) -> None:
        self.event = event
        self.pipes = pipes or WakePipes()
        self.queue_changed = queue_changed or (lambda: None)
        self.idle = False
        self._reading: int | None = None

    def notified(self, payload: str) -> None:
        """Handle one notification's payload ("" or a task id)."""
        alone = self.idle and not self.event.is_set() and payload.isascii() and payload.isdigit()
        if not alone:
            self.wake_siblings()
        self.now()

    def wake_siblings(self, message: bytes = _WAKE) -> None:
        """Nudge every sibling: each claims as soon as it is free."""
        for end in self.pipes.siblings:
            # Full: that sibling has nudges enough waiting. Broken: nobody is left to read.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(end.fileno(), message)

    def pool_changed(self) -> None:
        """The pool was paused or resumed (a leader heard it): this worker and its siblings."""
        self.queue_changed()
        self.wake_siblings(_QUEUE_CHANGED)
        self.now()

    def start(self) -> None:
        """Wake on nudges from the leader (a no-op for a leader); call on the running loop."""
        if self.pipes.mine is None:
            return
        fd = self.pipes.mine.fileno()
        asyncio.get_running_loop().add_reader(fd, self._nudged, fd)
        self._reading = fd

    def close(self) -> None:
        """Stop reading nudges."""
        if self._reading is not None:
            asyncio.get_running_loop().remove_reader(self._reading)
            self._reading = None

    def _nudged(self, fd: int) -> None:
        try:
            nudges = os.read(fd, 4096)  # every nudge so far: one claim answers them all
        except BlockingIOError:
            return
        if _QUEUE_CHANGED in nudges:
            self.queue_changed()
        self.now()

    def now(self) -> None:
        """Wake the worker now."""
        self.event.set()
