"""Retention: the pruner against a real PostgreSQL, with back-dated rows."""

from __future__ import annotations

import asyncio
import re

import psycopg2
import pytest

from asynctask.core import upkeep
from asynctask.core.sql import QUERIES, inline_params
from asynctask.workers import pruner
from asynctask.workers.connection import QueryConnection
from asynctask.workers.pruner import LOCK_KEY, Pruner
from tests.conftest import make_config
from tests.test_worker import fetch, running
from tests.waiting import wait_until_async

Cursor = psycopg2.extensions.cursor


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pruner, "PAUSE_SECONDS", 0.0)


def add(sql: Cursor, state: str, days_ago: float | None, n: int = 1) -> list[int]:
    """Insert `n` tasks in `state`, finished `days_ago` days ago (None: not finished)."""
    sql.execute(
        "INSERT INTO tasks (type, state, finished_at)"
        " SELECT 'ok', %s, now() - %s * interval '1 day' FROM generate_series(1, %s) RETURNING id",
        (state, days_ago, n),
    )
    return [row[0] for row in sql.fetchall()]


def remaining(sql: Cursor, ids: list[int]) -> int:
    sql.execute("SELECT count(*) FROM tasks WHERE id = ANY(%s)", (ids,))
    return int(fetch(sql)[0])


def make_pruner(url: str, completed: float = 7, failed: float = 30, batch: int = 5000) -> Pruner:
    config = make_config(url, retention__completed_days=completed, retention__failed_days=failed)
    made = Pruner(QueryConnection(url, 10.0), config.retention, "high_1")
    made.batch = batch
    return made


async def test_deletes_only_finished_rows_past_their_retention(
    database_url: str, sql: Cursor
) -> None:
    gone = add(sql, "completed", 8, n=5) + add(sql, "cancelled", 8) + add(sql, "failed", 31)
    kept = add(sql, "completed", 6) + add(sql, "cancelled", 6) + add(sql, "failed", 8)
    # Never finished, even with an (odd) old finished_at: never deleted.
    kept += [add(sql, state, 100)[0] for state in ("available", "running", "retrying")]
    kept += add(sql, "available", None)
    worker_pruner = make_pruner(database_url, batch=2)  # 5 old completed rows: three batches
    try:
        deleted = await worker_pruner.prune_once()
    finally:
        worker_pruner.conn.close()
    assert deleted == {
        "completed": 5,
        "cancelled": 1,
        "failed": 1,
        "idempotency_keys": 0,
        "result_listeners": 0,
    }
    assert remaining(sql, gone) == 0
    assert remaining(sql, kept) == len(kept)
    assert advisory_locks(sql) == 0  # released


async def test_fractional_days_prune_within_minutes(database_url: str, sql: Cursor) -> None:
    minute = 1 / 1440
    gone = add(sql, "completed", 4 * minute) + add(sql, "failed", 11 * minute)
    kept = add(sql, "completed", 2 * minute) + add(sql, "failed", 9 * minute)
    short = make_pruner(database_url, completed=3 * minute, failed=10 * minute)
    try:
        assert await short.prune_once() == {
            "completed": 1,
            "cancelled": 0,
            "failed": 1,
            "idempotency_keys": 0,
            "result_listeners": 0,
        }
    finally:
        short.conn.close()
    assert remaining(sql, gone) == 0
    assert remaining(sql, kept) == len(kept)


def test_a_retention_shorter_than_the_interval_sets_the_interval(database_url: str) -> None:
    # Rows become due for pruning after the retention, and are gone one interval later at most.
    second = 1 / 86_400
    assert make_pruner(database_url).interval() == pruner.PRUNE_EVERY_SECONDS
    short = make_pruner(database_url, completed=10 * second, failed=0)
    assert short.interval() == pytest.approx(10)
    short = make_pruner(database_url, completed=0, failed=20 * second)
    assert short.interval() == pytest.approx(20)
    tiny = make_pruner(database_url, completed=0.001 * second, failed=0)
    assert tiny.interval() == pruner.SHORTEST_INTERVAL_SECONDS


async def test_zero_keeps_a_state_forever(database_url: str, sql: Cursor) -> None:
    old = add(sql, "completed", 400) + add(sql, "cancelled", 400)
    old_failed = add(sql, "failed", 400)
    nothing = make_pruner(database_url, completed=0, failed=0)
    try:
        assert await nothing.prune_once() == {
            "idempotency_keys": 0,
            "result_listeners": 0,
        }  # no task is even tried
    finally:
        nothing.conn.close()
    only_failed = make_pruner(database_url, completed=0, failed=30)
    try:
        # completed, cancelled: not tried
        assert await only_failed.prune_once() == {
            "failed": 1,
            "idempotency_keys": 0,
            "result_listeners": 0,
        }
    finally:
        only_failed.conn.close()
    assert remaining(sql, old) == len(old)
    assert remaining(sql, old_failed) == 0


def prune_buffers(sql: Cursor, limit: int) -> tuple[int, list[str]]:
    """Pages the prune of completed tasks (7 days) read, and its plan; rolled back."""
    sql.execute("BEGIN")
    query, params = QUERIES["prune_finished"], inline_params(("completed", 7, limit))
    sql.execute("EXPLAIN (ANALYZE, BUFFERS) " + query.inline, params)
    lines = [row[0] for row in sql.fetchall()]
    sql.execute("ROLLBACK")
    total = next(line for line in lines if "Buffers:" in line)  # the top node's: all of them
    return sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", total)), lines


def test_a_prune_reads_what_it_deletes_not_every_finished_task(sql: Cursor) -> None:
    # Every worker tries once a minute, on tables of millions of finished tasks: a try that finds
    # nothing old enough must not read them all (a full scan: 0.3 s per try on a million).
    add(sql, "completed", 1, n=100_000)
    sql.execute("ANALYZE tasks")
    pages, plan = prune_buffers(sql, 5000)
    assert pages < 20, "\n".join(plan)  # the table is over 1,000 pages
    assert "tasks_finished_idx" in "\n".join(plan)


async def test_the_oldest_finished_tasks_go_first(database_url: str, sql: Cursor) -> None:
    newer = add(sql, "completed", 8, n=3)
    oldest = add(sql, "completed", 20, n=3)
    few = make_pruner(database_url, batch=3)
    try:
        deleted = await few.conn.run(
            upkeep.prune_finished, state="completed", older_than_days=7, limit=3
        )
    finally:
        few.conn.close()
    assert deleted == 3
    assert (remaining(sql, oldest), remaining(sql, newer)) == (0, 3)


def advisory_locks(sql: Cursor) -> int:
    sql.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return int(fetch(sql)[0])


async def test_one_pruner_at_a_time(
    database_url: str, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(sql, "completed", 10, n=40)
    first, second = make_pruner(database_url, batch=1), make_pruner(database_url, batch=1)
    holder = psycopg2.connect(database_url)
    holder.autocommit = True
    try:
        # Another supervisor's pruner holds the lock: nobody here prunes.
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        assert await first.prune_once() is None
        sql.execute("SELECT count(*) FROM tasks")
        assert fetch(sql)[0] == 40
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        # One row per statement and 10 ms between them: the first prunes for about 0.4 s, and
        # the second, trying while the first holds the lock, gets nothing to do.
        monkeypatch.setattr(pruner, "PAUSE_SECONDS", 0.01)
        pruning = asyncio.create_task(first.prune_once())
        await wait_until_async(lambda: advisory_locks(sql) == 1)
        assert await second.prune_once() is None
        assert not pruning.done()
        assert await pruning == {
            "completed": 40, "cancelled": 0, "failed": 0,
            "idempotency_keys": 0, "result_listeners": 0,
        }  # fmt: skip
    finally:
        holder.close()
        first.conn.close()
        second.conn.close()
    assert advisory_locks(sql) == 0


async def test_workers_prune_in_the_background(
    database_url: str, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pruner, "PRUNE_EVERY_SECONDS", 0.05)
    old, new = add(sql, "completed", 2, n=3), add(sql, "completed", 0.5)
    config = make_config(database_url, retention__completed_days=1)
    async with running(config):
        await wait_until_async(lambda: remaining(sql, old) == 0, timeout=10)
    assert remaining(sql, new) == 1


async def test_workers_prune_in_the_background_when_every_task_is_kept(
    database_url: str, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retention 0 keeps tasks, not expired Idempotency-Key answers or dead listeners' rows.
    monkeypatch.setattr(pruner, "PRUNE_EVERY_SECONDS", 0.05)
    old = add(sql, "completed", 400)
    sql.execute(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, status, task_ids, expires_at)"
        " VALUES ('', 'gone', 'f', 201, ARRAY[1], now() - interval '1 hour')"
    )
    sql.execute("INSERT INTO result_listeners (pid) VALUES (2147483647)")  # no such backend
    config = make_config(database_url, retention__completed_days=0, retention__failed_days=0)
    async with running(config):
        await wait_until_async(lambda: _rows(sql, "idempotency_keys") == 0, timeout=10)
        await wait_until_async(lambda: _rows(sql, "result_listeners") == 0, timeout=10)
    assert remaining(sql, old) == 1


def _rows(sql: Cursor, table: str) -> int:
    sql.execute(f"SELECT count(*) FROM {table}")  # a table name from this file, not input
    return int(fetch(sql)[0])


async def test_expired_idempotency_answers_are_pruned_whatever_the_task_retention(
    database_url: str, sql: Cursor
) -> None:
    sql.execute(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, status, task_ids, expires_at)"
        " SELECT '', 'k' || i, 'f', 201, ARRAY[i], now() + (i - 3.5) * interval '1 hour'"
        " FROM generate_series(1, 6) AS i"
    )
    keeper = make_pruner(database_url, completed=0, failed=0, batch=2)  # three expired: 2 batches
    try:
        assert await keeper.prune_once() == {"idempotency_keys": 3, "result_listeners": 0}
    finally:
        keeper.conn.close()
    sql.execute("SELECT key FROM idempotency_keys ORDER BY key")
    assert [row[0] for row in sql.fetchall()] == ["k4", "k5", "k6"]


async def test_the_prune_forgets_result_listeners_whose_backend_is_gone(
    database_url: str, sql: Cursor
) -> None:
    # 2**31 - 1 is above any pid_max: no backend has it, as if its API had died.
    sql.execute("INSERT INTO result_listeners (pid) VALUES (2147483647), (pg_backend_pid())")
    keeper = make_pruner(database_url)
    try:
        assert (await keeper.prune_once() or {})["result_listeners"] == 1
    finally:
        keeper.conn.close()
    sql.execute("SELECT pid = pg_backend_pid() FROM result_listeners")
    assert sql.fetchall() == [(True,)]  # the live one stays
