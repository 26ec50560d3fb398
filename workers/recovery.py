"""Start-up recovery of a worker: release what dead processes on this host left `running`.

The supervisor tells a replacement whom it replaces (plain data, no DB in the supervisor); every
worker of a supervisor's first generation also sweeps the host for lockers whose pid is gone,
which covers a supervisor that was SIGKILLed with all its children. Tasks of other hosts are left
to lease expiry.
"""

from __future__ import annotations

import logging
import os

from asynctask.core import db
from asynctask.workers.connection import QueryConnection
from asynctask.workers.slots import DeadWorker

log = logging.getLogger("asynctask.worker")


async def release_leftovers(
    conn: QueryConnection, host: str, own: str, dead: DeadWorker | None, delay_ms: int
) -> None:
    """Release the predecessor's tasks (a replacement), or those of dead processes on this host."""
    if dead is not None:
        slot, pid = dead.locked_by.rsplit(":", 1)[1], pid_of(dead.locked_by)
        # First what it had finished but not written, so those tasks do not run again.
        written = await conn.run(db.complete_unacknowledged, dead.locked_by, dead.completed)
        failed, back = await conn.run(
            db.release_dead_worker,
            locked_by=dead.locked_by,
            running_task_id=dead.task_id,
            reason=f"worker {slot} (pid {pid}) died while running this task: {dead.cause}",
            delay_ms=delay_ms,
        )
        log.info(
            "released the tasks of pid %s: %d completions written, %d failed attempt,"
            " %d handed back",
            pid,
            written,
            failed,
            back,
            extra={"event": "released", "slot": slot, "dead_pid": pid, "count": failed + back},
        )
        # A replacement does not sweep: a sibling that just died is released by its own
        # replacement, which knows the running task and the cause (a sweep would charge an
        # attempt to every task it held, prefetched ones too, under a generic reason).
        return
    gone = dead_lockers(await conn.run(db.running_lockers, f"{host}:"), own)
    if gone:
        reason = "worker process died while running this task (found at start of another)"
        count = await conn.run(db.release_orphans, gone, reason, delay_ms)
        fields = {"event": "released", "slot": own.rsplit(":", 1)[-1], "count": count}
        log.warning("released %d tasks of %d dead worker processes", count, len(gone), extra=fields)


def pid_of(locker: str) -> int | None:
    """The pid in a `host:pid:slot` value, or None if it does not have that shape."""
    parts = locker.rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists here and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, just not ours to signal
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # Field 3, after the parenthesised command name (which may itself hold spaces).
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def dead_lockers(lockers: list[str], own: str) -> list[str]:
    """The lockers whose process is gone (our own pid counts as gone: it was reused)."""
    gone = []
    for locker in lockers:
        pid = pid_of(locker)
        if pid is None:
            continue
        if locker == own or pid == os.getpid() or not pid_alive(pid):
            gone.append(locker)
    return gone
