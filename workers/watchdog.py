"""The supervisor's watchdog: which children to kill, a silent event loop or too much memory.

A worker beats into its slot's link every second from its event loop (workers/upkeep.py); one that
has not beaten for longer than its longest task timeout plus a grace has a handler blocking the
loop, and nothing but SIGKILL ends it. `worker_max_memory_mb` bounds a leaking handler the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from asynctask.workers.children import Child

WATCHDOG_GRACE_SECONDS = 10.0  # beyond the longest task timeout, before a silent child is killed


def overdue(
    children: Sequence[Child], stale_after: float, limit_mb: int | None
) -> Iterator[tuple[Child, int, str]]:
    """Each watched child to kill now, with its pid and the reason to log."""
    for child in children:
        process = child.process
        if process is None or not child.watched or process.pid is None:
            continue
        silent = child.silent_for()
        if silent > stale_after:
            reason = f"killed by the watchdog: no heartbeat for {silent:.0f} s"
            yield child, process.pid, f"{reason} (a handler blocking the event loop?)"
        elif limit_mb is not None and (rss := rss_mb(process.pid)) > limit_mb:
            reason = f"killed: {rss:.0f} MB resident is over worker_max_memory_mb {limit_mb}"
            yield child, process.pid, reason


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
