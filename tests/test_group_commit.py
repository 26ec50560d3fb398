"""Group commit: concurrent single creates share INSERTs, and each is answered with its own row."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiopg
import psycopg2.extensions
import pytest

from asynctask.core import task_rows
from asynctask.core.connections import create_pool
from asynctask.core.creates import Created
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.models import Priority
from asynctask.service.group_commit import GroupCommit
from asynctask.service.rules import NewTask

Cursor = psycopg2.extensions.cursor


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[aiopg.Pool]:
    pool = await create_pool(database_url, 4, 10)
    yield pool
    pool.close()
    await pool.wait_closed()


def _task(i: int, priority: int = 1, data: dict[str, Any] | None = None) -> NewTask:
    data = {"i": i} if data is None else data
    return NewTask("ok", Priority.of(priority), 1 + i % 5, json.dumps(data))


def _statements(sql: Cursor) -> int:
    """INSERTs committed so far: every task of one statement has the same xmin."""
    sql.execute("SELECT count(DISTINCT xmin::text) FROM tasks")
    row = sql.fetchone()
    assert row is not None
    return int(row[0])


async def test_concurrent_creates_share_one_insert_and_get_their_own_rows(
    pool: aiopg.Pool, sql: Cursor
) -> None:
    creates = GroupCommit(pool, timeout=5)
    tasks = [_task(i, priority=1 + i % 3) for i in range(30)]
    rows = [created.row for created in await asyncio.gather(*map(creates.create, tasks))]
    for task, row in zip(tasks, rows, strict=True):
        assert row["max_attempts"] == task.max_attempts
        assert row["priority"] == task.priority
        assert row["state"] == "available"
    sql.execute("SELECT id, data FROM tasks")
    stored = {row[0]: row[1] for row in sql.fetchall()}
    expected = {
        row["id"]: json.loads(task.data_json) for task, row in zip(tasks, rows, strict=True)
    }
    assert stored == expected
    # All 30 were waiting when the first INSERT went out, so it carried all of them.
    assert _statements(sql) == 1


async def test_a_lone_create_goes_out_at_once(pool: aiopg.Pool, sql: Cursor) -> None:
    creates = GroupCommit(pool, timeout=5)
    first = await creates.create(_task(1))
    second = await creates.create(_task(2))
    assert second.row["id"] > first.row["id"]
    assert _statements(sql) == 2


async def test_a_row_the_server_refuses_fails_only_its_own_create(
    pool: aiopg.Pool, sql: Cursor
) -> None:
    sql.execute("ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (NOT data ? 'poison')")
    creates = GroupCommit(pool, timeout=5)
    tasks = [_task(i) for i in range(6)]
    tasks[4] = _task(4, data={"poison": True})
    results = await asyncio.gather(*(creates.create(t) for t in tasks), return_exceptions=True)
    assert isinstance(results[4], psycopg2.errors.CheckViolation)
    created = [r for i, r in enumerate(results) if i != 4]
    assert all(isinstance(r, Created) and not r.duplicate for r in created)
    sql.execute("SELECT data->>'i' FROM tasks ORDER BY id")
    assert [row[0] for row in sql.fetchall()] == ["0", "1", "2", "3", "5"]


async def test_an_unreachable_database_fails_every_waiting_create(
    pool: aiopg.Pool, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: Any) -> None:
        raise DatabaseUnavailable("database is unavailable: test")

    monkeypatch.setattr(task_rows, "insert_task_rows", down)
    creates = GroupCommit(pool, timeout=5)
    results = await asyncio.gather(
        *(creates.create(_task(i)) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, DatabaseUnavailable) for r in results)


async def test_a_create_cancelled_while_waiting_is_skipped_and_close_waits(
    pool: aiopg.Pool, sql: Cursor
) -> None:
    creates = GroupCommit(pool, timeout=5, statements=1)
    first = asyncio.create_task(creates.create(_task(0)))
    await asyncio.sleep(0)  # the first INSERT is out; the next create has to wait for it
    waiting = asyncio.create_task(creates.create(_task(1)))
    kept = asyncio.create_task(creates.create(_task(2)))
    await asyncio.sleep(0)
    waiting.cancel()
    assert (await first).row["id"] == 1 and (await kept).row["id"] == 2
    await creates.close()
    sql.execute("SELECT data->>'i' FROM tasks ORDER BY id")
    assert [row[0] for row in sql.fetchall()] == ["0", "2"]
