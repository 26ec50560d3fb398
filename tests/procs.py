"""Real supervisors in tests: spawn one, find its children, wait for conditions, stop or kill it."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import psycopg2.extensions

from asynctask.cli.start import run_workers
from asynctask.core.config import Config
from asynctask.core.logs import setup_logging
from asynctask.workers.slots import slots_for
from asynctask.workers.supervisor import Supervisor
from tests.test_worker import fetch
from tests.waiting import wait_until

Cursor = psycopg2.extensions.cursor
CTX = multiprocessing.get_context("spawn")


# --- spawn target (top level: it is pickled by reference) ---------------------------------------


def supervise(config: Config, grace: float | None = None, target: Any = None) -> None:
    """Run a supervisor in this (spawned) process, as `asynctask workers` would."""
    setup_logging("INFO", "text")
    if grace is None and target is None:
        sys.exit(run_workers(config))
    extra: dict[str, Any] = {} if target is None else {"target": target}
    supervisor = Supervisor(
        config, slots_for(config.priority_queues), watchdog_grace=grace or 10.0, **extra
    )
    sys.exit(supervisor.run())


# --- helpers ------------------------------------------------------------------------------------


def pid_of(process: SpawnProcess) -> int:
    assert process.pid is not None
    return process.pid


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def children(pid: int) -> dict[str, int]:
    """Title → pid of the live descendants of a process (workers are the forkserver's children)."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = {}, list(kids.get(pid, []))
    while todo:
        child = todo.pop()
        found[title(child)] = child
        todo += kids.get(child, [])
    return found


def listening(sql: Cursor) -> int:
    """Worker connections open (each LISTENs, then looks for work, as soon as it is open)."""
    sql.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'asynctask worker %%'"
    )
    return int(fetch(sql)[0])


def waiting_for_work(sql: Cursor) -> int:
    """Workers between tasks: connected (so a leader LISTENs), recovered, no task, and their
    connection idle; by the registry row their process wrote since it connected.

    Not by the connection's last statement being a claim: a worker's periodic statements (its
    heartbeat every 2 s, the watch every second) follow the claim, and with a long poll interval
    the claim does not come back, so that was true only in a window that a slow run could miss.
    """
    sql.execute(
        "SELECT count(*) FROM pg_stat_activity AS a JOIN workers AS w"
        " ON a.application_name = 'asynctask worker ' || w.slot"
        " WHERE a.datname = current_database() AND a.state = 'idle'"
        " AND w.status = 'idle' AND w.heartbeat_at >= a.backend_start"
    )
    return int(fetch(sql)[0])


def count(sql: Cursor, condition: str = "true") -> int:
    sql.execute(f"SELECT count(*) FROM tasks WHERE {condition}")
    return int(fetch(sql)[0])


def executed(sql: Cursor, task_id: int) -> int:
    """How many times the `record` handler ran this task."""
    sql.execute("SELECT count(*) FROM executions WHERE task_id = %s", (task_id,))
    return int(fetch(sql)[0])


def kill_tree(process: SpawnProcess) -> None:
    if process.pid is None:
        return
    for pid in children(pid_of(process)).values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if process.is_alive():
        process.kill()
    process.join(5)


@contextlib.contextmanager
def supervisor(config: Config, sql: Cursor | None = None, **kwargs: Any) -> Iterator[SpawnProcess]:
    """A running supervisor; with `sql`, waits until every worker is LISTENing."""
    process = CTX.Process(target=supervise, args=(config,), kwargs=kwargs)
    process.start()
    try:
        if sql is not None:
            workers = len(slots_for(config.priority_queues))
            wait_until(lambda: listening(sql) >= workers)
        yield process
    finally:
        kill_tree(process)


def stop(process: SpawnProcess, timeout: float = 20.0) -> int | None:
    assert process.pid is not None
    os.kill(process.pid, signal.SIGTERM)
    process.join(timeout)
    return process.exitcode


def insert_many(
    sql: Cursor, n: int, type_: str = "ok", data: str = "{}", priority: int = 1
) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, data) SELECT %s, %s, %s FROM generate_series(1, %s)",
        (type_, priority, data, n),
    )
