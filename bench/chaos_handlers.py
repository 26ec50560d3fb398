"""The chaos benchmark's handler: record each execution, then work for a few milliseconds."""

from __future__ import annotations

import os
import time
import uuid

import psycopg2
import psycopg2.extensions

from asynctask.core.models import Task

RECORD_DSN_ENV = "ASYNCTASK_CHAOS_RECORD_DSN"
RECORD_PATIENCE_SECONDS = 60.0
EXECUTIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS executions (id uuid PRIMARY KEY, task_id bigint NOT NULL,"
    " attempt int NOT NULL, pid int NOT NULL, at float8 NOT NULL)"
)

# One connection per worker process, used only by its single handler thread, autocommit: the
# record is committed before the task's own outcome exists, so it survives a lost completion.
_conn: psycopg2.extensions.connection | None = None


def record(task: Task) -> None:
    """Insert one `executions` row (retrying through a database restart), then sleep data['ms']."""
    row = (str(uuid.uuid4()), task.id, task.attempts, os.getpid(), time.time())
    _insert(row)
    time.sleep(float(task.data.get("ms", 2)) / 1000)


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
