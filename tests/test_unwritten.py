"""A SIGKILL costs at most the task that was running: buffered completions are not re-run."""

from __future__ import annotations

import multiprocessing
import os
import signal

import psycopg2.extensions

from asynctask.core.models import Priority
from asynctask.workers.link import CLAIMING, DeadWorker, SlotLink
from asynctask.workers.slots import Slot
from tests.conftest import make_config
from tests.procs import children, count, executed, pid_of, stop, supervisor
from tests.waiting import wait_until

Cursor = psycopg2.extensions.cursor


def test_a_dead_workers_record_is_what_its_link_last_said() -> None:
    link = SlotLink(multiprocessing.get_context("spawn"), Slot("high_1", Priority.HIGH))
    link.spawning(None)
    link.idle()
    assert link.death("h:1:high_1", "x") == DeadWorker("h:1:high_1", "x")
    link.unwritten[1], link.unwritten[2], link.unwritten[0] = 7, 9, 2
    link.running(11)
    assert link.death("h:1:high_1", "x") == DeadWorker("h:1:high_1", "x", 11, False, (7, 9))
    link.unwritten[0] = 10**6  # a torn count never reads past the array
    assert len(link.death("h:1:high_1", "x").completed) == len(link.unwritten) - 1
    link.unwritten[0] = 0
    link.claiming()
    assert link.doing == CLAIMING
    assert link.death("h:1:high_1", "x") == DeadWorker("h:1:high_1", "x", claiming=True)


def test_a_worker_that_dies_recovering_passes_its_predecessor_on() -> None:
    link = SlotLink(multiprocessing.get_context("spawn"), Slot("high_1", Priority.HIGH))
    first = DeadWorker("h:1:high_1", "killed by SIGKILL", task_id=5)
    link.spawning(first)
    assert link.death("h:2:high_1", "killed again") == first


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
