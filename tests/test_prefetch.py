"""Prefetch sizing: deep queues of quick tasks claim big batches, slow tasks are not hoarded."""

from __future__ import annotations

import psycopg2.extensions

from asynctask.workers.prefetch import WINDOW_SECONDS, next_limit, update_average
from tests.conftest import make_config
from tests.test_worker import running
from tests.waiting import wait_until_async


def test_limit_doubles_while_claims_come_back_full_and_resets_when_short() -> None:
    assert next_limit(1, 1, 0.0, 100) == 2
    assert next_limit(64, 64, 0.0, 100) == 100
    assert next_limit(100, 100, 0.0, 100) == 100
    assert next_limit(32, 5, 0.0, 100) == 1
    assert next_limit(1, 0, 0.0, 100) == 1


def test_the_time_window_caps_the_batch_by_expected_work() -> None:
    assert next_limit(8, 8, 0.00003, 100) == 16  # quick tasks: the count cap rules
    assert next_limit(64, 64, WINDOW_SECONDS / 10, 100) == 10
    assert next_limit(8, 8, 2.0, 100) == 1  # slow tasks: one at a time


def test_average_starts_at_the_first_sample_then_smooths() -> None:
    assert update_average(0.0, 1.0, 10) == 0.1
    assert 0.1 < update_average(0.1, 2.0, 10) < 0.2
    assert update_average(0.3, 5.0, 0) == 0.3


async def test_a_worker_never_holds_much_more_than_the_window_of_slow_tasks(
    database_url: str, sql: psycopg2.extensions.cursor
) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, data)"
        " SELECT 'sleepy', 1, '{\"seconds\": 0.04}' FROM generate_series(1, 40)"
    )
    config = make_config(database_url, prefetch=100)
    held: list[int] = []

    def sample() -> bool:
        sql.execute("SELECT count(*) FROM tasks WHERE state = 'running'")
        held.append(sql.fetchone()[0])
        sql.execute("SELECT count(*) FROM tasks WHERE state <> 'completed'")
        return sql.fetchone()[0] == 0

    async with running(config):
        await wait_until_async(sample, timeout=30)
    # 40 ms tasks in a 100 ms window: batches of at most 2 (3 while the first average forms),
    # where count-only doubling would have reached 32.
    assert max(held) <= 4
