"""Poisoned tasks: a handler that leaks memory, segfaults or aborts costs only its own process."""

from __future__ import annotations

import psycopg2.extensions

from tests.conftest import TEST_HANDLERS, make_config
from tests.procs import children, count, insert_many, pid_of, stop, supervisor
from tests.waiting import wait_until

Cursor = psycopg2.extensions.cursor
POISON = {
    "leak": "tests.handlers:leak",
    "segfault": "tests.handlers:segfault",
    "abort": "tests.handlers:abort",
}
LIMIT_MB = 200


def test_leak_segfault_and_abort_fail_their_task_and_spare_the_other_workers(
    database_url: str, sql: Cursor
) -> None:
    config = make_config(
        database_url,
        priority_queues={"high": 2, "normal": 1, "low": 0},
        handlers={**TEST_HANDLERS, **POISON},
        worker_max_memory_mb=LIMIT_MB,
        timeout_milliseconds=100,
    )
    with supervisor(config, sql) as process:
        bystander = children(pid_of(process))["asynctask worker normal_1"]
        sql.execute(
            "INSERT INTO tasks (type, priority, max_attempts, data) VALUES"
            " ('leak', 1, 2, '{\"mb_per_step\": 10, \"max_mb\": 1500}'),"
            " ('segfault', 1, 2, '{}'), ('abort', 1, 2, '{}')"
        )
        insert_many(sql, 20, "ok", priority=1)
        insert_many(sql, 50, "sleepy", '{"seconds": 0.05}', priority=2)
        wait_until(lambda: count(sql, "state IN ('completed', 'failed')") == 73, timeout=60)
        # The bystander never died: it is still the same process, and it did all its work.
        assert children(pid_of(process))["asynctask worker normal_1"] == bystander
        assert stop(process) == 0
    assert count(sql, "state = 'completed'") == 70
    sql.execute(
        "SELECT type, state, attempts, last_error FROM tasks WHERE type IN %s", (tuple(POISON),)
    )
    found = {row[0]: row[1:] for row in sql.fetchall()}
    causes = {
        "leak": f"resident is over worker_max_memory_mb {LIMIT_MB}",
        "segfault": "killed by SIGSEGV",
        "abort": "killed by SIGABRT",
    }
    for type_, cause in causes.items():
        state, attempts, last_error = found[type_]
        assert (state, attempts) == ("failed", 2), (type_, last_error)
        assert "died while running this task" in last_error and cause in last_error, last_error
