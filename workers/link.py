"""The link between the supervisor and the processes of one slot: all they share, in one type.

The supervisor makes one SlotLink per slot and hands the same link to every process of that slot
(each worker inherits it, shared memory and pipe ends included, from the fork server, which
holds one per slot and sets `predecessor` in the child it forks). Through it a worker
tells the supervisor that it is alive (heartbeat), what it is doing (recovering, claiming, running
task N, idle), and which completions it has not written yet; through it the supervisor tells a
replacement whom it replaces (`predecessor`), and reaches the slot's wake-up pipes. The supervisor
reads it only between processes (after a death) or for the watchdog; nothing else crosses.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Final

from asynctask.workers.slots import Slot
from asynctask.workers.wakeup import WakePipes

# What a worker is doing, besides running task N (> 0). A worker that dies RECOVERING had not yet
# released its predecessor's tasks; one that dies CLAIMING died on the rows a claim brought in.
IDLE: Final = 0
RECOVERING: Final = -1
CLAIMING: Final = -2
# Buffered completions mirrored for the supervisor (workers/acks.py flushes at this many).
ACK_CAPACITY: Final = 100
# [count, id_1, ..., id_capacity]
Mirror = ctypes.Array[ctypes.c_longlong]


@dataclass(frozen=True, slots=True)
class DeadWorker:
    """What a replacement needs to settle its predecessor's tasks."""

    locked_by: str
    cause: str
    task_id: int | None = None  # the task it was running
    claiming: bool = False  # it died inside a claim: every row that claim took is suspect
    completed: tuple[int, ...] = ()  # finished, but not yet written when it died


class SlotLink:
    """Shared state of one slot: made by the supervisor, used by each of the slot's processes."""

    def __init__(self, ctx: BaseContext, slot: Slot, pipes: WakePipes | None = None) -> None:
        self.slot = slot
        self.pipes = pipes or WakePipes()
        self.predecessor: DeadWorker | None = None
        self._heartbeat = ctx.RawValue(ctypes.c_double, time.monotonic())
        self._doing = ctx.RawValue(ctypes.c_longlong, IDLE)
        self.unwritten: Mirror = ctx.RawArray(ctypes.c_longlong, ACK_CAPACITY + 1)

    # --- the worker's side ---------------------------------------------------------------------

    def beat(self) -> None:
        """The worker's event loop is alive."""
        self._heartbeat.value = time.monotonic()

    def running(self, task_id: int) -> None:
        """From now until `idle()`, a death is charged to this task."""
        self._doing.value = task_id

    def claiming(self) -> None:
        """A claim is on its way: a death now is charged to every row it took."""
        self._doing.value = CLAIMING

    def idle(self) -> None:
        """Nothing is running; the predecessor's tasks (if any) are settled."""
        self._doing.value = IDLE

    # --- the supervisor's side -----------------------------------------------------------------

    def spawning(self, predecessor: DeadWorker | None) -> None:
        """Before each process of the slot starts: whom it replaces; it is recovering until idle."""
        self.predecessor = predecessor
        self._heartbeat.value = time.monotonic()
        self._doing.value = RECOVERING

    def silent_for(self) -> float:
        """Seconds since the last heartbeat."""
        return time.monotonic() - self._heartbeat.value

    @property
    def doing(self) -> int:
        """The task running now (> 0), or IDLE, RECOVERING, CLAIMING."""
        return int(self._doing.value)

    def death(self, locked_by: str, cause: str) -> DeadWorker:
        """The record of a process of this slot that just died, for its replacement."""
        doing = self._doing.value
        if doing == RECOVERING and self.predecessor is not None:
            # It died before settling its predecessor's tasks (it claimed none of its own): the
            # next replacement gets the same job, instead of leaving it to lease expiry.
            return self.predecessor
        count = max(0, min(self.unwritten[0], ACK_CAPACITY))
        return DeadWorker(
            locked_by=locked_by,
            cause=cause,
            task_id=doing if doing > 0 else None,
            claiming=doing == CLAIMING,
            completed=tuple(self.unwritten[1 : count + 1]),
        )
