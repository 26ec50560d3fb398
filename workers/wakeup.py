"""Wake one worker per new task, not its whole pool.

Every LISTENer of a channel gets every notification, and waking all of a pool's idle workers (and
their backends) for one task slowed the one that ran it (measured in bench/README.md). So only a
pool's first worker, its leader, LISTENs on tasks_<priority>. It claims alone when it is idle and
the notification names one task (a single create). Otherwise, when it is busy or already about to
claim, or the notification stands for any number of tasks (a batch, a re-established LISTEN, a bare
NOTIFY sent from SQL), it also wakes its siblings through pipes: one per sibling slot, made once by
the supervisor and handed to every process of that slot, so a restarted worker is reachable at
once. A notification stays a hint: every worker also polls, which is how tasks are found while a
leader is being replaced.
Tasks due later are the leader's too: its timer (workers/due.py) fires at their time.

The same pipes carry a leader's cancel requests to its siblings (workers/cancels.py) and pool
pauses (workers/pause.py): a nudge is one byte, NUDGE; a pause or resume is QUEUE_CHANGED; a
cancel is CANCEL and the task id in 8 bytes, written at once (a pipe write up to PIPE_BUF bytes is
never split) and never mistaken for the others: the one-byte messages are never CANCEL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

from asynctask.workers.due import DueTimer, parse_at
from asynctask.workers.slots import Slot

NUDGE = b"\x01"  # claim now
CANCEL = 2  # the first byte of a cancel message: CANCEL, then the task id (8 bytes, big-endian)
QUEUE_CHANGED = b"\x03"  # the pool was paused or resumed: read its state again, then claim


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
    """Sets `event` for a notification, a sibling's nudge or the due timer; a leader passes work
    on when it must.

    `idle` is True while the worker waits for work (set by the worker around its wait).
    `on_busy_due` is called when the timer fires while the worker is busy.
    A leader also passes on "the pool was paused or resumed" (`queue_changed`): a sibling
    that reads that byte calls its own `queue_changed`.
    """

    def __init__(
        self,
        event: asyncio.Event,
        pipes: WakePipes | None = None,
        cancelled: Callable[[int], None] | None = None,
        queue_changed: Callable[[], None] | None = None,
    ) -> None:
        self.event = event
        self.pipes = pipes or WakePipes()
        self.queue_changed = queue_changed or (lambda: None)
        self.idle = False
        self.timer = DueTimer(self._due)
        self.on_busy_due: Callable[[], None] | None = None
        self.cancelled = cancelled or (lambda task_id: None)  # a cancel a leader passed on
        self._reading: int | None = None
        self._partial = b""

    def notified(self, payload: str) -> None:
        """Handle one notification's payload: "", a task id, or "at <epoch> <tag>" (due later)."""
        later = parse_at(payload)
        if later is not None:
            self.timer.at_epoch(*later)
            return
        alone = self.idle and not self.event.is_set() and payload.isascii() and payload.isdigit()
        if not alone:
            self.wake_siblings()
        self.now()

    def wake_siblings(self, message: bytes = NUDGE) -> None:
        """Nudge every sibling: each claims as soon as it is free."""
        for end in self.pipes.siblings:
            # Full: that sibling has nudges enough waiting. Broken: nobody is left to read.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(end.fileno(), message)

    def cancel_on_sibling(self, index: int, task_id: int) -> None:
        """Pass a cancel to the sibling of slot index `index` (1 for high_2)."""
        if not 0 < index <= len(self.pipes.siblings):
            return
        end = self.pipes.siblings[index - 1]
        # Full or broken: lost, and the worker's own check finds it (workers/cancels.py).
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(end.fileno(), bytes([CANCEL]) + task_id.to_bytes(8, "big"))

    def pool_changed(self) -> None:
        """The pool was paused or resumed (a leader heard it): this worker and its siblings."""
        self.queue_changed()
        self.wake_siblings(QUEUE_CHANGED)
        self.now()

    def start(self) -> None:
        """Wake on nudges from the leader (a no-op for a leader); call on the running loop."""
        if self.pipes.mine is None:
            return
        fd = self.pipes.mine.fileno()
        asyncio.get_running_loop().add_reader(fd, self._nudged, fd)
        self._reading = fd

    def _due(self) -> None:
        # A task's time came: claim it now. Alone when idle and it is due alone (the siblings
        # would only find nothing); a busy leader hands it on.
        if self.timer.together or not self.idle or self.event.is_set():
            self.wake_siblings()
            if not self.idle and self.on_busy_due is not None:
                self.on_busy_due()
        self.now()

    def close(self) -> None:
        """Stop reading nudges and the timer."""
        self.timer.cancel()
        if self._reading is not None:
            asyncio.get_running_loop().remove_reader(self._reading)
            self._reading = None

    def _nudged(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)  # every nudge so far: one claim answers them all
        except BlockingIOError:
            return
        if CANCEL in data or self._partial:
            data = self._cancels(self._partial + data)
        if QUEUE_CHANGED in data:
            self.queue_changed()
        if NUDGE in data or QUEUE_CHANGED in data:
            self.now()

    def _cancels(self, data: bytes) -> bytes:
        """Hand on each whole cancel message, keep a cut-off one for the next read; the nudges."""
        nudges, at = bytearray(), 0
        while (found := data.find(CANCEL, at)) >= 0 and len(data) - found >= 9:
            nudges += data[at:found]
            self.cancelled(int.from_bytes(data[found + 1 : found + 9], "big"))
            at = found + 9
        end = len(data) if found < 0 else found
        self._partial = data[end:]
        return bytes(nudges + data[at:end])

    def now(self) -> None:
        """Wake the worker now."""
        self.event.set()
