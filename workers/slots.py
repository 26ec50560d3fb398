"""Plain data shared by the supervisor and its children: slots, exit codes, exit causes."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from asynctask.core.models import PRIORITIES, Priority

# Exit-code contract between a child and the supervisor (gunicorn's WORKER_BOOT_ERROR idea).
EXIT_CONFIG_ERROR = 4  # handlers cannot be imported / bad config: stop everything, do not loop
EXIT_REPLACE_NOW = 5  # a sync handler is stuck in its thread: replace this process at once


@dataclass(frozen=True, slots=True)
class Slot:
    """One worker process position, e.g. high_2; its name survives restarts."""

    name: str
    priority: Priority
    index: int = 0  # high_2 is index 1; index 0 is its pool's leader (workers/wakeup.py)


def slots_for(priority_queues: Mapping[Priority, int]) -> list[Slot]:
    """high_1..high_N, normal_1.., low_1..: one slot per configured worker, in priority order."""
    return [
        Slot(f"{priority}_{n}", priority, n - 1)
        for priority in PRIORITIES
        for n in range(1, priority_queues.get(priority, 0) + 1)
    ]


def locked_by(host: str, pid: int, slot: str) -> str:
    """The `locked_by` value of a worker process: host:pid:slot."""
    return f"{host}:{pid}:{slot}"


def describe_exit(exitcode: int | None) -> str:
    """A process's exit status for people: "exit code 1" or "signal SIGKILL (...)"."""
    if exitcode is None:
        return "still running"
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    if -exitcode == signal.SIGKILL:
        return f"killed by {name} (perhaps out of memory?)"
    return f"killed by {name}"


def supervisor_alive() -> Callable[[], bool]:
    """A check that the process that started this one (the supervisor) still runs.

    It watches multiprocessing's parent sentinel, a pipe the supervisor holds open. A worker
    inherits it from the fork server (its os.getppid()), which the supervisor started as its
    multiprocessing child; so it works even when the supervisor died while this process was still
    starting. Always True outside a supervisor (a worker run in a test).
    """
    parent = multiprocessing.parent_process()
    return (lambda: True) if parent is None else parent.is_alive


def supervisor_pid() -> int:
    """The pid of the supervisor that started this process (the fork server is not it)."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getppid()
