"""The kinds of process a supervisor keeps alive: a slot's worker, or a service such as the API.

Both are restarted with the same per-child backoff; they differ in what a process gets at spawn
and what its death leaves behind. A worker gets its slot's link and, when it dies, leaves a record
for its replacement (which tasks to settle) and is watched for a silent event loop and for memory.
A service (the API of `asynctask run`) is a plain target with its arguments.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from typing import Any

from asynctask.workers.forkserver import ServedProcess
from asynctask.workers.link import DeadWorker, SlotLink
from asynctask.workers.slots import locked_by


@dataclass(frozen=True)
class ServiceSpec:
    """A process for the supervisor to run beside the workers: `target(*args)`, picklable."""

    name: str
    target: Callable[..., None]
    args: tuple[Any, ...] = ()


class Child:
    """One supervised position: its current process and its restart bookkeeping."""

    watched = False  # heartbeat watchdog and memory limit apply

    def __init__(self, name: str) -> None:
        self.name = name
        self.process: ServedProcess | SpawnProcess | None = None
        self.started = 0.0
        self.failures = 0
        self.restart_at: float | None = 0.0
        self.kill_reason: str | None = None

    def died(self, host: str, pid: int | None, cause: str) -> None:
        """Its process died unasked (not during a stop): remember what the next one needs."""

    def silent_for(self) -> float:
        """Seconds since it last showed a sign of life (0 for kinds without a heartbeat)."""
        return 0.0

    @property
    def running_task(self) -> int | None:
        """The id of the task its process is running now, if it runs tasks and one is running."""
        return None


class WorkerChild(Child):
    """A worker slot (high_2): its link, and the record its dead process left for the next."""

    watched = True

    def __init__(self, link: SlotLink) -> None:
        super().__init__(link.slot.name)
        self.link = link
        self.dead: DeadWorker | None = None

    def spawning(self) -> DeadWorker | None:
        """Before each process of the slot starts: whom it replaces (None: nobody)."""
        self.link.spawning(self.dead)
        return self.dead

    def died(self, host: str, pid: int | None, cause: str) -> None:
        """Record what the dead process held, for its replacement to settle."""
        self.dead = self.link.death(locked_by(host, pid or 0, self.name), cause)

    def silent_for(self) -> float:
        """Seconds since its event loop last beat."""
        return self.link.silent_for()

    @property
    def running_task(self) -> int | None:
        """The task its process runs now (the link says), or None when idle or claiming."""
        doing = self.link.doing
        return doing if doing > 0 else None


class ServiceChild(Child):
    """A service process (the API): restarted like a worker, nothing shared with it."""

    def __init__(self, spec: ServiceSpec) -> None:
        super().__init__(spec.name)
        self.spec = spec

    def target(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """The spec's target and arguments."""
        return self.spec.target, self.spec.args


def close_process(child: Child) -> None:
    """Forget a reaped process (its resources are released)."""
    if child.process is not None:
        with contextlib.suppress(ValueError):
            child.process.close()
        child.process = None


def reap_strangers(ours: set[int | None]) -> None:
    """As PID 1 we inherit orphans: reap those that are not `ours` (gunicorn's note)."""
    while True:
        try:
            # WNOWAIT peeks, so our own children stay for multiprocessing to reap.
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in ours:
            return
        os.waitpid(info.si_pid, 0)


def stop_notice(children: Sequence[Child], timeout: float) -> str:
    """The line that starts a stop: how many processes, and which tasks it waits for, how long."""
    live = [c for c in children if c.process is not None]
    running = [f"{c.name}: task {c.running_task}" for c in live if c.running_task is not None]
    if not running:
        return f"stopping {len(live)} processes; no task is running"
    one = len(running) == 1
    tasks, them, are = (
        ("1 task is", "it", "it is") if one else (f"{len(running)} tasks are", "them", "they are")
    )
    return (
        f"stopping {len(live)} processes; {tasks} running ({', '.join(running)}): waiting up to"
        f" {timeout:g} s for {them} to finish (shutdown_timeout_seconds), then {are} cut off"
        " and retried later"
    )
