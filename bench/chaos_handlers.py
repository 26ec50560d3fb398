"""The fault benchmarks' handler: record each execution, then work for a few milliseconds.

It records into the database's `executions` table (bench/chaos.py), or, when RECORD_FILE_ENV
names a file, appends a line to it (bench/hosts.py: a host cut off from the database still runs
what it holds, and those runs must be counted; the harness loads the files at the end).
"""

from __future__ import annotations

import os
import time
import uuid

import psycopg2
import psycopg2.extensions

from asynctask.core.models import Task

RECORD_DSN_ENV = "ASYNCTASK_CHAOS_RECORD_DSN"
RECORD_FILE_ENV = "ASYNCTASK_CHAOS_RECORD_FILE"
RECORD_PATIENCE_SECONDS = 60.0
EXECUTIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS executions (id uuid PRIMARY KEY, task_id bigint NOT NULL,"
    " attempt int NOT NULL, pid int NOT NULL, at float8 NOT NULL)"
)

# One connection per worker process, used only by its single handler thread, autocommit: the
# record is committed before the task's own outcome exists, so it survives a lost completion.
_conn: psycopg2.extensions.connection | None = None
_file: int | None = None


def record(task: Task) -> None:
    """Record one execution (a row of `executions`, or a line of the record file); sleep data['ms'].

    The database insert is retried through a restart.
    """
    row = (str(uuid.uuid4()), task.id, task.attempts, os.getpid(), time.time())
    if RECORD_FILE_ENV in os.environ:
        _append(row)
    else:
        _insert(row)
    time.sleep(float(task.data.get("ms", 2)) / 1000)


def _append(row: tuple[str, int, int, int, float]) -> None:
    global _file
    if _file is None:
        _file = os.open(os.environ[RECORD_FILE_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    # One write(2) of one short line with O_APPEND: the worker processes of a host share the file
    # without interleaving, and a SIGKILL after it returns loses nothing.
    os.write(_file, ("\t".join(map(str, row)) + "\n").encode())


def _insert(row: tuple[str, int, int, int, float]) -> None:
    global _conn
    deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
    while True:
        try:
            if _conn is None or _conn.closed:
                _conn = psycopg2.connect(os.environ[RECORD_DSN_ENV], connect_timeout=5)
                _conn.autocommit = True
            with _conn.cursor() as cur:
                # The id makes a retry after an unanswered commit harmless: no double record.
                cur.execute(
                    "INSERT INTO executions (id, task_id, attempt, pid, at)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    row,
                )
            return
        except psycopg2.Error:
            if _conn is not None:
                _conn.close()
            _conn = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
