"""A SIGKILL costs at most the task that was running: buffered completions are not re-run."""

from __future__ import annotations

import os
import signal

import psycopg2.extensions

from asynctask.workers.acks import completion_mirror, mirrored_ids
from tests.conftest import make_config
from tests.procs import children, count, executed, pid_of, stop, supervisor, wait_until

Cursor = psycopg2.extensions.cursor


def test_the_mirror_holds_ids_until_the_count_says_otherwise() -> None:
    mirror = completion_mirror(3)
    assert mirrored_ids(mirror) == ()
    mirror[1], mirror[2], mirror[0] = 7, 9, 2
    assert mirrored_ids(mirror) == (7, 9)
    mirror[0] = 99  # a torn count never reads past the array
    assert mirrored_ids(mirror) == (7, 9, 0)


def test_sigkill_does_not_rerun_completions_waiting_in_the_ack_buffer(
    database_url: str, executions: Cursor
) -> None:
    sql = executions
    # Outcomes wait up to 10 s to be written, so at the kill the quick tasks' completions are
    # only in the buffer. Claims: [ok], [r1, r2], [r3, slow]: r3 is buffered while slow runs.
    config = make_config(
        database_url,
        priority_queues={"high": 1, "normal": 0, "low": 0},
        ack_flush_milliseconds=10_000,
        shutdown_timeout_seconds=1,
    )
    sql.execute(
        "INSERT INTO tasks (type, priority, data) VALUES ('ok', 1, '{}'),"
        " ('record', 1, '{}'), ('record', 1, '{}'), ('record', 1, '{}'),"
        " ('record', 1, '{\"seconds\": 30}')"
    )
    with supervisor(config, sql) as process:
        first = wait_until(lambda: children(pid_of(process)).get("asynctask worker high_1"))
        wait_until(lambda: count(sql, "true") == 0 or executed(sql, 5) == 1)
        assert executed(sql, 4) == 1
        sql.execute("SELECT state FROM tasks WHERE id = 4")
        assert sql.fetchone() == ("running",)  # ran, but its completion is not written yet
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: count(sql, "id = 4 AND state = 'completed'") == 1)
        wait_until(lambda: executed(sql, 5) == 2)  # the running task is the one that re-runs
        sql.execute("SELECT attempts, last_error LIKE '%SIGKILL%' FROM tasks WHERE id = 5")
        assert sql.fetchone() == (2, True)
        assert stop(process) == 0
    sql.execute("SELECT task_id, count(*) FROM executions GROUP BY task_id ORDER BY task_id")
    assert sql.fetchall() == [(2, 1), (3, 1), (4, 1), (5, 2)]
