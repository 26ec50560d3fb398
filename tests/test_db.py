"""The database layer against a real PostgreSQL: claims, fencing tokens, releases, rescue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiopg
import psycopg2.extensions
import pytest

from asynctask.core import db
from asynctask.core.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidTransition,
    TaskNotFound,
)

HOST = "testhost"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[aiopg.Connection]:
    connection = await db.connect(database_url)
    yield connection
    connection.close()


async def _claim(conn: aiopg.Connection, limit: int = 10, slot: str = "high_1") -> tuple[str, list]:
    token = str(uuid.uuid4())
    rows = await db.claim(
        conn, priority=1, limit=limit, locked_by=f"{HOST}:1:{slot}", token=token, lease_seconds=30
    )
    return token, rows


def _state(sql: psycopg2.extensions.cursor, task_id: int) -> tuple:
    sql.execute("SELECT state, attempts, last_error FROM tasks WHERE id = %s", (task_id,))
    return sql.fetchone()


def test_the_originals_load_test_statement_runs_verbatim(sql: psycopg2.extensions.cursor) -> None:
    sql.execute(
        "INSERT INTO tasks (priority, type, data, inserted_at, updated_at)"
        " SELECT 1, 'report', '{}', now(), now() FROM generate_series(1,1000)"
    )
    sql.execute("SELECT count(*), min(state), min(attempts), min(max_attempts) FROM tasks")
    assert sql.fetchone() == (1000, "available", 0, 5)


def test_schema_rejects_bad_rows(sql: psycopg2.extensions.cursor) -> None:
    for bad in (
        "INSERT INTO tasks (type, priority) VALUES ('x', 4)",
        "INSERT INTO tasks (type, max_attempts) VALUES ('x', 0)",
        "INSERT INTO tasks (type, state) VALUES ('x', 'lost')",
        "INSERT INTO tasks (type, data) VALUES ('x', '[1]')",
    ):
        with pytest.raises(psycopg2.errors.CheckViolation):
            sql.execute(bad)


async def test_apply_schema_twice_changes_nothing(conn: aiopg.Connection, sql) -> None:
    sql.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index ORDER BY 1")
    before = sql.fetchall()
    await db.apply_schema(conn)
    await db.apply_schema(conn)
    sql.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index ORDER BY 1")
    assert sql.fetchall() == before
    sql.execute("SELECT reloptions FROM pg_class WHERE relname = 'tasks'")
    assert "fillfactor=70" in sql.fetchone()[0]


async def test_claim_is_exclusive_under_concurrency(database_url: str, sql) -> None:
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'ok', 1 FROM generate_series(1, 500)")
    conns = [await db.connect(database_url) for _ in range(5)]
    try:

        async def drain(c: aiopg.Connection, slot: str) -> list[int]:
            got: list[int] = []
            while rows := (await _claim(c, limit=7, slot=slot))[1]:
                got.extend(row["id"] for row in rows)
            return got

        results = await asyncio.gather(*(drain(c, f"high_{i}") for i, c in enumerate(conns)))
    finally:
        for c in conns:
            c.close()
    claimed = [task_id for ids in results for task_id in ids]
    assert len(claimed) == 500
    assert len(set(claimed)) == 500


async def test_claim_takes_only_due_tasks_of_its_priority_oldest_first(conn, sql) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, scheduled_at) VALUES"
        " ('ok', 1, now() - interval '1 minute'), ('ok', 1, now() + interval '1 hour'),"
        " ('ok', 2, now()), ('ok', 1, now() - interval '2 minutes')"
    )
    _, rows = await _claim(conn, limit=10)
    assert [row["id"] for row in rows] == [1, 4]
    assert all(row["attempts"] == 1 for row in rows)
    assert rows[0]["data"] == {}


async def _setting(conn: aiopg.Connection) -> str:
    async with conn.cursor() as cur:
        await cur.execute("SELECT current_setting('synchronous_commit')")
        return str((await cur.fetchone())[0])


async def test_a_claim_commits_asynchronously_and_nothing_else_does(conn, sql) -> None:
    sql.execute("INSERT INTO tasks (type, priority) VALUES ('a', 1), ('b', 1)")
    # On its own (autocommit, as workers run it) the setting ends with the claim's transaction:
    # the connection's acknowledgements commit synchronously.
    assert len((await _claim(conn, limit=1))[1]) == 1
    assert await _setting(conn) == "on"
    # Inside an explicit transaction the claim's local setting is still visible after it.
    async with conn.cursor() as cur:
        await cur.execute("BEGIN")
        assert len((await _claim(conn, limit=1))[1]) == 1
        assert await _setting(conn) == "off"
        await cur.execute("COMMIT")
    sql.execute("SELECT count(*) FROM tasks WHERE state = 'running'")
    assert sql.fetchone() == (2,)


async def _prepared(conn: aiopg.Connection) -> list[str]:
    async with conn.cursor() as cur:
        await cur.execute("SELECT name FROM pg_prepared_statements ORDER BY name")
        return [row[0] for row in await cur.fetchall()]


async def test_the_claim_is_prepared_once_per_connection_and_again_when_lost(conn, sql) -> None:
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'a', 1 FROM generate_series(1, 3)")
    assert await _prepared(conn) == []
    assert len((await _claim(conn, limit=1))[1]) == 1
    assert len((await _claim(conn, limit=1))[1]) == 1
    assert await _prepared(conn) == ["asynctask_claim"]
    async with conn.cursor() as cur:
        await cur.execute("DEALLOCATE ALL")  # what a server-side reset would leave
    assert len((await _claim(conn, limit=1))[1]) == 1
    assert await _prepared(conn) == ["asynctask_claim"]


async def test_finish_checks_the_claim_token(conn, sql) -> None:
    sql.execute("INSERT INTO tasks (type, priority) VALUES ('ok', 1), ('ok', 1)")
    token, rows = await _claim(conn)
    stale = db.Outcome(task_id=rows[0]["id"], token=str(uuid.uuid4()), state="completed")
    assert await db.finish(conn, [stale]) == 0
    assert _state(sql, 1)[0] == "running"
    outcomes = [
        db.Outcome(task_id=1, token=token, state="completed"),
        db.Outcome(task_id=2, token=token, state="retrying", delay_ms=60_000, error="E: x"),
    ]
    assert await db.finish(conn, outcomes) == 2
    assert _state(sql, 1) == ("completed", 1, None)
    assert _state(sql, 2) == ("retrying", 1, "E: x")
    sql.execute(
        "SELECT scheduled_at > now() + interval '50 seconds', locked_by FROM tasks WHERE id=2"
    )
    assert sql.fetchone() == (True, None)
    # Finishing twice is a no-op: the claim is gone.
    assert await db.finish(conn, outcomes) == 0
    assert await db.finish(conn, []) == 0


async def test_release_unstarted_gives_back_the_attempt(conn, sql) -> None:
    sql.execute("INSERT INTO tasks (type, priority, attempts) VALUES ('ok', 1, 0), ('ok', 1, 2)")
    token, rows = await _claim(conn)
    assert await db.release_unstarted(conn, [row["id"] for row in rows], token) == 2
    assert _state(sql, 1)[:2] == ("available", 0)
    assert _state(sql, 2)[:2] == ("retrying", 2)
    assert await db.release_unstarted(conn, [], token) == 0


async def test_release_dead_worker_counts_only_the_running_task(conn, sql) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts) VALUES ('ok', 1, 5), ('ok', 1, 5),"
        " ('ok', 1, 1)"
    )
    await _claim(conn)
    locked_by = f"{HOST}:1:high_1"
    failed, back = await db.release_dead_worker(
        conn, locked_by=locked_by, running_task_id=1, reason="killed by SIGKILL", delay_ms=0
    )
    assert (failed, back) == (1, 2)
    assert _state(sql, 1) == ("retrying", 1, "killed by SIGKILL")
    assert _state(sql, 2)[:2] == ("available", 0)
    assert _state(sql, 3)[:2] == ("available", 0)
    # A task whose last attempt was the one that died is failed, not retried.
    await _claim(conn)
    await db.release_dead_worker(
        conn, locked_by=locked_by, running_task_id=3, reason="segfault", delay_ms=0
    )
    assert _state(sql, 3) == ("failed", 1, "segfault")


async def test_orphans_of_dead_processes_are_found_and_released(conn, sql) -> None:
    sql.execute("INSERT INTO tasks (type, priority) VALUES ('ok', 1), ('ok', 1)")
    await _claim(conn, limit=1, slot="high_1")
    await _claim(conn, limit=1, slot="high_2")
    lockers = await db.running_lockers(conn, f"{HOST}:")
    assert sorted(lockers) == [f"{HOST}:1:high_1", f"{HOST}:1:high_2"]
    assert await db.running_lockers(conn, "otherhost:") == []
    assert await db.release_orphans(conn, [f"{HOST}:1:high_1"], "process gone", 0) == 1
    assert _state(sql, 1) == ("retrying", 1, f"process gone ({HOST}:1:high_1)")
    assert _state(sql, 2)[0] == "running"
    assert await db.release_orphans(conn, [], "x", 0) == 0


async def test_orphan_release_charges_one_attempt_per_dead_process(conn, sql) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts) SELECT 'ok', 1, 1 FROM"
        " generate_series(1, 4)"
    )
    await _claim(conn, limit=3, slot="high_1")  # prefetched 1..3, was running 1
    await _claim(conn, limit=1, slot="high_2")
    gone = [f"{HOST}:1:high_1", f"{HOST}:1:high_2"]
    assert await db.release_orphans(conn, gone, "gone", 0) == 4
    assert [_state(sql, i)[:2] for i in (1, 2, 3, 4)] == [
        ("failed", 1),
        ("available", 0),
        ("available", 0),
        ("failed", 1),
    ]


async def test_expired_leases_are_rescued_and_extended_ones_are_not(conn, sql) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts) VALUES ('ok', 1, 5), ('ok', 1, 5),"
        " ('ok', 1, 1)"
    )
    token, _ = await _claim(conn, limit=2, slot="high_1")
    other, _ = await _claim(conn, limit=1, slot="high_2")
    assert await db.rescue_expired(conn, delay_ms=0) == 0
    sql.execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second'")
    assert await db.extend_leases(conn, [token, other], 30) == 3
    assert await db.rescue_expired(conn, delay_ms=0) == 0
    assert await db.extend_leases(conn, [], 30) == 0
    sql.execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second'")
    assert await db.rescue_expired(conn, delay_ms=0) == 3
    # Per dead worker, the lowest id was the one it was on: charged; the rest never started.
    state, attempts, error = _state(sql, 1)
    assert (state, attempts) == ("retrying", 1)
    assert error.startswith("lease expired: worker testhost:1:high_1")
    assert _state(sql, 2) == ("available", 0, None)
    assert _state(sql, 3)[:2] == ("failed", 1)  # its only attempt was spent
    # The rescued claim's token no longer finishes anything.
    assert await db.finish(conn, [db.Outcome(1, token, "completed")]) == 0


async def test_api_reads_and_transitions(conn, sql) -> None:
    task = await db.insert_task(conn, "ok", 2, 3, {"k": [1, 2]})
    assert task["priority"] == "normal"
    assert task["data"] == {"k": [1, 2]}
    assert (await db.get_task(conn, task["id"]))["state"] == "available"
    with pytest.raises(TaskNotFound):
        await db.get_task(conn, 999)
    cancelled = await db.cancel_task(conn, task["id"])
    assert cancelled["state"] == "cancelled"
    assert cancelled["finished_at"] is not None
    with pytest.raises(InvalidTransition) as info:
        await db.cancel_task(conn, task["id"])
    assert info.value.state == "cancelled"
    retried = await db.retry_task(conn, task["id"])
    assert (retried["state"], retried["attempts"], retried["finished_at"]) == ("available", 0, None)
    with pytest.raises(InvalidTransition):
        await db.retry_task(conn, task["id"])
    with pytest.raises(TaskNotFound):
        await db.retry_task(conn, 999)


async def test_one_task_and_many_give_the_same_rows_and_notify_their_priority(
    database_url: str, conn
) -> None:
    # One task goes through its own VALUES statement, several through unnest: same answer.
    listener = await db.connect(database_url)
    try:
        await db.listen(listener, "tasks_normal")
        (one,) = await db.insert_task_rows(conn, [("ok", 2, 3, '{"k": [1, 2]}')])
        two = await db.insert_task_rows(conn, [("ok", 2, 3, '{"k": [1, 2]}')] * 2)
        await asyncio.sleep(0.2)
        payloads = []
        while not listener.notifies.empty():
            payloads.append(listener.notifies.get_nowait().payload)
    finally:
        listener.close()
    assert payloads == [str(one["id"]), ""]  # a lone task names itself; a group does not
    assert one == await db.get_task(conn, one["id"])
    different = {"id", "inserted_at", "updated_at", "scheduled_at"}
    assert {k: v for k, v in one.items() if k not in different} == {
        k: v for k, v in two[0].items() if k not in different
    }
    assert await _prepared(conn) == ["asynctask_insert_one", "asynctask_insert_rows"]


async def test_list_tasks_filters_and_pages_by_keyset(conn) -> None:
    for i in range(5):
        await db.insert_task(conn, "ok" if i % 2 else "report", 1 + i % 3, 5, {})
    page = await db.list_tasks(conn, limit=2)
    assert [t["id"] for t in page] == [5, 4]
    page = await db.list_tasks(conn, limit=2, before_id=4)
    assert [t["id"] for t in page] == [3, 2]
    assert [t["id"] for t in await db.list_tasks(conn, limit=10, type_="ok")] == [4, 2]
    assert [t["id"] for t in await db.list_tasks(conn, limit=10, priority=1)] == [4, 1]
    assert await db.list_tasks(conn, limit=10, state="failed") == []


async def test_insert_tasks_keeps_request_order_and_notifies_once_per_priority(
    database_url: str, conn
) -> None:
    listener = await db.connect(database_url)
    try:
        for channel in ("tasks_high", "tasks_low", "tasks_normal"):
            await db.listen(listener, channel)
        ids = await db.insert_tasks(
            conn, [("ok", 3, 5, "{}"), ("ok", 1, 5, '{"a": 1}'), ("ok", 3, 2, "{}")]
        )
        assert ids == sorted(ids) and len(ids) == 3
        await asyncio.sleep(0.2)
        seen = []
        while not listener.notifies.empty():
            seen.append(listener.notifies.get_nowait().channel)
        assert sorted(seen) == ["tasks_high", "tasks_low"]
        assert (await db.get_task(conn, ids[1]))["data"] == {"a": 1}
    finally:
        listener.close()


async def test_connection_limits_and_ping(conn) -> None:
    max_connections, reserved = await db.connection_limits(conn)
    assert max_connections > reserved >= 0
    await db.ping(conn)


async def test_unreachable_server_is_database_unavailable_with_redacted_url() -> None:
    url = "postgresql://user:secret@127.0.0.1:1/nodb"
    with pytest.raises(DatabaseUnavailable) as info:
        await db.connect(url, timeout=2)
    assert "secret" not in str(info.value)
    assert "user:***@127.0.0.1:1" in str(info.value)


def test_redact_leaves_passwordless_urls_alone() -> None:
    assert db.redact("postgresql://u@h/d") == "postgresql://u@h/d"
    assert db.redact("postgresql://u:p@h/d") == "postgresql://u:***@h/d"


async def test_ensure_database_creates_once(database_url: str) -> None:
    name = f"asynctask_new_{uuid.uuid4().hex[:8]}"
    url = psycopg2.extensions.make_dsn(database_url, dbname=name)
    try:
        assert await db.ensure_database(url) is True
        assert await db.ensure_database(url) is False
    finally:
        admin = await db.connect(psycopg2.extensions.make_dsn(database_url, dbname="postgres"))
        async with admin.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


async def test_ensure_database_without_create_privilege_names_the_url(database_url: str) -> None:
    role = f"nocreate_{uuid.uuid4().hex[:8]}"
    admin = await db.connect(database_url)
    async with admin.cursor() as cur:
        await cur.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    try:
        url = psycopg2.extensions.make_dsn(database_url, user=role, dbname="asynctask_missing_db")
        with pytest.raises(DatabaseError, match="does not exist and this role may not create it"):
            await db.ensure_database(url)
    finally:
        async with admin.cursor() as cur:
            await cur.execute(f"DROP ROLE {role}")
        admin.close()


async def test_concurrent_sweepers_charge_a_dead_process_once(database_url: str, conn, sql) -> None:
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'ok', 1 FROM generate_series(1, 50)")
    await _claim(conn, limit=50, slot="high_1")
    others = [await db.connect(database_url) for _ in range(4)]
    try:
        gone = [f"{HOST}:1:high_1"]
        released = await asyncio.gather(*(db.release_orphans(c, gone, "gone", 0) for c in others))
    finally:
        for c in others:
            c.close()
    assert sum(released) == 50
    sql.execute("SELECT sum(attempts), count(*) FILTER (WHERE state = 'running') FROM tasks")
    assert sql.fetchone() == (1, 0)
