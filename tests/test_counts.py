"""Task counts and rates without count(*): the triggers, the compaction, and what they report."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiopg
import psycopg2
import psycopg2.extensions
import pytest

from asynctask.core import counts, schema, stats
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.models import Priority
from asynctask.core.sql import QUERIES, inline_params
from tests.conftest import make_config
from tests.procs import count, insert_many, stop, supervisor
from tests.waiting import wait_until

Cursor = psycopg2.extensions.cursor
# The original's load test, as its README gives it.
SEED_LOAD = (
    "INSERT INTO tasks (priority, type, data, inserted_at, updated_at)"
    " SELECT 1, 'report', '{}', now(), now() FROM generate_series(1, 1000000)"
)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[aiopg.Connection]:
    connection = await connect(database_url)
    yield connection
    connection.close()


def truth(sql: Cursor) -> dict[tuple[Priority, str, str], int]:
    """What count(*) says, per (priority, state, type)."""
    sql.execute("SELECT priority, state, type, count(*) FROM tasks GROUP BY 1, 2, 3")
    return {(Priority.of(p), s, t): n for p, s, t, n in sql.fetchall()}


async def kept(conn: aiopg.Connection) -> dict[tuple[Priority, str, str], int]:
    """What the trigger-kept tables say."""
    return {(c.priority, c.state, c.type): c.tasks for c in await counts.count_tasks(conn)}


def run(sql: Cursor, name: str, *params: object) -> None:
    sql.execute(QUERIES[name].inline, inline_params(params))


async def test_every_statement_asynctask_runs_is_counted(
    conn: aiopg.Connection, sql: Cursor
) -> None:
    insert_many(sql, 500, "ok", priority=1)
    insert_many(sql, 200, "boom", priority=2)
    run(sql, "insert_one", "ok", 3, 5, "{}", None, None)
    run(sql, "insert_many", "{ok,boom}", "{1,3}", "{5,5}", '{"{}","{}"}', "{NULL,NULL}",
        "{NULL,NULL}")  # fmt: skip
    token = str(uuid.uuid4())
    run(sql, "claim", 1, 100, "h:1:high_1", token, 30.0, 1 << 20)
    sql.execute("SELECT id FROM tasks WHERE lock_token = %s ORDER BY id", (token,))
    ids = [row[0] for row in sql.fetchall()]
    run(sql, "extend_leases", ids, "{" + token + "}", 30.0)  # no state changes: no delta
    half = len(ids) // 2
    states = ["completed"] * half + ["failed"] * (len(ids) - half)
    nothing = [None] * len(ids)
    run(sql, "finish", ids, [token] * len(ids), states, nothing, [False] * len(ids), nothing,
        nothing)  # fmt: skip
    run(sql, "bulk_cancel", "{available,retrying}", 2, "boom", None)
    run(sql, "bulk_retry", "{failed,cancelled}", None, None)
    run(sql, "cancel_task", ids[0], "{available,retrying}")
    sql.execute("UPDATE tasks SET state = 'completed', finished_at = now() - interval '40 days'"
                " WHERE id % 3 = 0")  # fmt: skip
    run(sql, "prune_finished", "completed", 30.0, 1000)
    sql.execute("DELETE FROM tasks WHERE id % 7 = 0")
    assert await kept(conn) == truth(sql)
    sql.execute("SELECT count(*) FROM task_count_deltas")
    assert sql.fetchone()[0] > 0  # type: ignore[index]
    assert await counts.compact(conn) is not None
    sql.execute("SELECT count(*) FROM task_count_deltas")
    assert sql.fetchone() == (0,)
    assert await kept(conn) == truth(sql)


async def test_the_seeds_million_row_insert_is_counted(conn: aiopg.Connection, sql: Cursor) -> None:
    sql.execute(SEED_LOAD)
    assert await kept(conn) == {(Priority.HIGH, "available", "report"): 1_000_000}
    sql.execute("SELECT count(*) FROM task_count_deltas")
    assert sql.fetchone() == (1,)  # one statement, one delta row
    assert await kept(conn) == truth(sql)


async def test_one_compaction_at_a_time_and_none_changes_a_count(
    conn: aiopg.Connection, sql: Cursor, database_url: str
) -> None:
    insert_many(sql, 50, "ok")
    holder = psycopg2.connect(database_url)
    with holder.cursor() as cur:  # a transaction that holds the compaction lock
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (counts.COMPACT_LOCK,))
        assert await counts.compact(conn) is None
    holder.rollback()
    holder.close()
    before = await kept(conn)
    assert await counts.compact(conn) == 1
    assert await kept(conn) == before == truth(sql)
    await counts.tidy(conn)  # drops zero totals, vacuums the deltas
    sql.execute("DELETE FROM tasks")
    await counts.compact(conn)
    await counts.tidy(conn)
    sql.execute("SELECT count(*) FROM task_counts")
    assert sql.fetchone() == (0,)


async def test_truncate_resets_the_counts(conn: aiopg.Connection, sql: Cursor) -> None:
    insert_many(sql, 10, "ok")
    await counts.compact(conn)
    insert_many(sql, 5, "ok")
    sql.execute("TRUNCATE tasks")
    assert await kept(conn) == {} == truth(sql)


async def test_the_first_migration_counts_the_rows_already_there(
    conn: aiopg.Connection, sql: Cursor
) -> None:
    # A table from before the counts: rows, and no triggers.
    for trigger in ("inserts", "updates", "deletes", "truncates"):
        sql.execute(f"DROP TRIGGER tasks_count_{trigger} ON tasks")
    insert_many(sql, 30, "ok", priority=2)
    sql.execute("UPDATE tasks SET state = 'failed' WHERE id % 2 = 0")
    sql.execute("DELETE FROM task_counts; DELETE FROM task_count_deltas")
    sql.execute(schema.schema_sql())
    assert await kept(conn) == truth(sql)
    sql.execute(schema.schema_sql())  # again: counted once, not twice
    insert_many(sql, 3, "ok", priority=2)
    assert await kept(conn) == truth(sql)


def test_rates_and_failures_from_a_real_drain(database_url: str, sql: Cursor) -> None:
    config: Config = make_config(database_url, priority_queues={"high": 2, "normal": 0, "low": 0})
    insert_many(sql, 2000, "ok")
    insert_many(sql, 20, "boom")  # 5 attempts each (the column's default): 4 retries, 1 failure
    with supervisor(config, sql) as process:
        wait_until(lambda: count(sql, "state IN ('completed', 'failed')") == 2020, timeout=60)
        assert stop(process) == 0
    snapshot = _snapshot(database_url)
    assert snapshot.counts[Priority.HIGH]["completed"] == 2000
    assert snapshot.counts[Priority.HIGH]["failed"] == 20
    assert snapshot.last_hour == {"created": 2020, "completed": 2000, "failed": 20, "retrying": 80}
    assert snapshot.last_minute == {"completed": 2000, "failed": 20}
    assert sum(m["created"] for m in snapshot.per_minute) == 2020
    assert sum(m["completed"] for m in snapshot.per_minute) == 2000
    assert snapshot.per_minute[-1]["seconds"] <= 60
    assert snapshot.types == ["boom", "ok"]


def _snapshot(url: str) -> stats.Snapshot:
    import asyncio

    async def read() -> stats.Snapshot:
        connection = await connect(url)
        try:
            return await stats.read_snapshot(connection)
        finally:
            connection.close()

    return asyncio.run(read())
