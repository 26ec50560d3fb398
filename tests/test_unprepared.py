"""database.prepared_statements: false: the API's hot statements as plain SQL, never PREPAREd."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import aiopg
import psycopg2.extensions
import pytest

from asynctask.core import claims, task_rows
from asynctask.core.connections import acquire, create_pool
from asynctask.core.models import Priority


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[aiopg.Pool]:
    unprepared = await create_pool(database_url, 2, 5.0, prepared_statements=False)
    yield unprepared
    unprepared.close()
    await unprepared.wait_closed()


async def _prepared(conn: aiopg.Connection) -> list[str]:
    async with conn.cursor() as cur:
        await cur.execute("SELECT name FROM pg_prepared_statements")
        return [row[0] for row in await cur.fetchall()]


async def test_inserts_and_claims_run_unprepared_with_the_same_results(
    pool: aiopg.Pool, sql: psycopg2.extensions.cursor
) -> None:
    async with acquire(pool, 5.0) as conn:
        data = '{"percent": "100%", "quote": "\'"}'
        (one,) = await task_rows.insert_task_rows(conn, [task_rows.NewRow("ok", 1, 5, data)])
        rows = await task_rows.insert_task_rows(
            conn, [task_rows.NewRow("ok", 2, 3, "{}"), task_rows.NewRow("ok", 1, 1, '{"n": 1}')]
        )
        ids = await task_rows.insert_tasks(conn, [task_rows.NewRow("ok", 3, 2, "{}")])
        token = str(uuid.uuid4())
        claimed = await claims.claim(
            conn,
            priority=Priority.HIGH,
            limit=10,
            locked_by="h:1:high_1",
            token=token,
            lease_seconds=30,
            max_bytes=1 << 20,
        )
        stored = await task_rows.get_task(conn, one["id"])
        assert await _prepared(conn) == []
    assert json.loads(stored["data"]) == json.loads(data) and one["priority"] == "high"
    assert [(r["priority"], r["max_attempts"]) for r in rows] == [("normal", 3), ("high", 1)]
    assert [r["id"] for r in claimed] == [one["id"], rows[1]["id"]]
    sql.execute("SELECT id, state, lock_token::text FROM tasks ORDER BY id")
    assert sql.fetchall() == [
        (one["id"], "running", token),
        (rows[0]["id"], "available", None),
        (rows[1]["id"], "running", token),
        (ids[0], "available", None),
    ]
