"""Settling the tasks of processes that died holding them: take them over, then decide as usual.

Recovery never writes a state of its own. It re-claims the dead process's running rows under a
fresh claim token (claims.reclaim_*), names what happened to each (an Event), and sends every row
through lifecycle.decide and claims.finish, exactly as a live worker's outcome. Three ways in:

- a replacement, told by the supervisor whom it replaces (SlotLink.predecessor): the task that was
  running is charged, completions it had not written are recorded, the rest go back uncounted;
- the first workers of a supervisor sweep their host for lockers whose pid is gone (a supervisor
  SIGKILLed with its children) and charge each such process one attempt, its lowest claimed id
  (a worker runs its claim in id order, so that is the task it was on, or one it had finished);
- any worker rescues tasks whose lease expired (their host died or was cut off), alike.

Tasks of other hosts are left to lease expiry.
"""

from __future__ import annotations

import itertools
import logging
import os
import uuid
from collections.abc import Iterable

from asynctask.core import claims
from asynctask.core.config import Config
from asynctask.core.lifecycle import Event, Outcome, decide
from asynctask.workers.connection import QueryConnection
from asynctask.workers.link import DeadWorker

log = logging.getLogger("asynctask.worker")
# What happened to one taken-over task, and the last_error it gets if it is charged.
Blame = tuple[claims.Held, Event, str | None]


def blame_predecessor(held: Iterable[claims.Held], dead: DeadWorker) -> list[Blame]:
    """Events for a dead worker's tasks, from what it told the supervisor before it died."""
    slot, pid = dead.locked_by.rsplit(":", 1)[-1], pid_of(dead.locked_by)
    reason = f"worker {slot} (pid {pid}) died while running this task: {dead.cause}"
    if dead.claiming:
        reason = f"worker {slot} (pid {pid}) died claiming this task: {dead.cause}"
    blamed: list[Blame] = []
    for task in held:
        if task.id in dead.completed:
            blamed.append((task, Event.ALREADY_DONE, None))
        elif task.id == dead.task_id or dead.claiming:
            blamed.append((task, Event.WORKER_CRASHED, reason))
        else:
            blamed.append((task, Event.NOT_STARTED, None))
    return blamed


def blame_lowest(held: Iterable[claims.Held], event: Event, reason: str) -> list[Blame]:
    """Nobody knows what ran: charge each previous holder's lowest id, hand back the rest.

    `reason` names the holder as `{holder}`.
    """
    blamed: list[Blame] = []
    by_holder = sorted(held, key=lambda task: (task.previous, task.id))
    for holder, tasks in itertools.groupby(by_holder, key=lambda task: task.previous):
        first, *rest = tasks
        blamed.append((first, event, reason.format(holder=holder)))
        blamed += [(task, Event.NOT_STARTED, None) for task in rest]
    return blamed


def outcomes(blamed: Iterable[Blame], token: str, config: Config) -> list[Outcome]:
    """The decision for each taken-over task, under our claim token."""
    return [
        Outcome(task.id, token, decide(event, task.attempts, task.max_attempts, config.retry), why)
        for task, event, why in blamed
    ]


async def release_leftovers(
    conn: QueryConnection, config: Config, host: str, own: str, dead: DeadWorker | None
) -> None:
    """Settle the predecessor's tasks (a replacement), or those of dead processes on this host."""
    token = str(uuid.uuid4())
    if dead is not None:
        # A replacement does not sweep: a sibling that just died is settled by its own
        # replacement, which knows the running task and the cause.
        held = await conn.run(
            claims.reclaim_lockers,
            [dead.locked_by],
            locked_by=own,
            token=token,
            lease_seconds=config.lease_seconds,
        )
        settled = outcomes(blame_predecessor(held, dead), token, config)
        await conn.run(claims.finish, settled)
        _report(own, f"pid {pid_of(dead.locked_by)}", settled)
        return
    gone = dead_lockers(await conn.run(claims.running_lockers, host), own)
    if not gone:
        return
    held = await conn.run(
        claims.reclaim_lockers, gone, locked_by=own, token=token, lease_seconds=config.lease_seconds
    )
    reason = "worker process {holder} died while running this task (found at start of another)"
    settled = outcomes(blame_lowest(held, Event.WORKER_CRASHED, reason), token, config)
    await conn.run(claims.finish, settled)
    _report(own, f"{len(gone)} dead worker processes", settled)


async def rescue_expired(conn: QueryConnection, config: Config, own: str) -> int:
    """Settle running tasks whose lease ran out; returns how many."""
    token = str(uuid.uuid4())
    held = await conn.run(
        claims.reclaim_expired, locked_by=own, token=token, lease_seconds=config.lease_seconds
    )
    if not held:
        return 0
    reason = "lease expired: worker {holder} stopped renewing its claim"
    settled = outcomes(blame_lowest(held, Event.LEASE_EXPIRED, reason), token, config)
    await conn.run(claims.finish, settled)
    return len(settled)


def _report(own: str, whose: str, settled: list[Outcome]) -> None:
    counts: dict[str, int] = {}
    for outcome in settled:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
    slot = own.rsplit(":", 1)[-1]
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    fields = {"event": "released", "slot": slot, "count": len(settled), "states": counts}
    log.info("settled the tasks of %s: %s", whose, summary, extra=fields)


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
