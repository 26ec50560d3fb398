"""The database layer against a real PostgreSQL: claims, fencing tokens, releases, rescue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiopg
import psycopg2.extensions
import pytest

from asynctask.core import channels, claims, connections, schema, task_rows
from asynctask.core.connections import connect, redact
from asynctask.core.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidTransition,
    TaskNotFound,
)
from asynctask.core.lifecycle import Decision, Outcome
from asynctask.core.models import Priority, State

HOST = "testhost"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[aiopg.Connection]:
    connection = await connect(database_url)
    yield connection
    connection.close()


async def _claim(conn: aiopg.Connection, limit: int = 10, slot: str = "high_1") -> tuple[str, list]:
    token = str(uuid.uuid4())
    rows = await claims.claim(
        conn,
        priority=Priority.HIGH,
        limit=limit,
        locked_by=f"{HOST}:1:{slot}",
        token=token,
        lease_seconds=30,
        max_bytes=2**20,
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
    await schema.apply_schema(conn)
    await schema.apply_schema(conn)
    sql.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index ORDER BY 1")
    assert sql.fetchall() == before
    sql.execute("SELECT reloptions FROM pg_class WHERE relname = 'tasks'")
    assert "fillfactor=70" in sql.fetchone()[0]


async def test_claim_is_exclusive_under_concurrency(database_url: str, sql) -> None:
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'ok', 1 FROM generate_series(1, 500)")
    conns = [await connect(database_url) for _ in range(5)]
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
    assert rows[0]["data"] == "{}"  # as text: a worker decodes each task's data itself


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
    stale = Outcome(rows[0]["id"], str(uuid.uuid4()), Decision(State.COMPLETED))
    assert await claims.finish(conn, [stale]) == 0
    assert _state(sql, 1)[0] == "running"
    outcomes = [
        Outcome(1, token, Decision(State.COMPLETED)),
        Outcome(2, token, Decision(State.RETRYING, 60_000), "E: x"),
    ]
    assert await claims.finish(conn, outcomes) == 2
    assert _state(sql, 1) == ("completed", 1, None)
    assert _state(sql, 2) == ("retrying", 1, "E: x")
    sql.execute(
        "SELECT scheduled_at > now() + interval '50 seconds', locked_by FROM tasks WHERE id=2"
    )
    assert sql.fetchone() == (True, None)
    # Finishing twice is a no-op: the claim is gone.
    assert await claims.finish(conn, outcomes) == 0
    assert await claims.finish(conn, []) == 0


async def test_api_reads_and_transitions(conn, sql) -> None:
    (task,) = await task_rows.insert_task_rows(
        conn, [task_rows.NewRow("ok", 2, 3, '{"k": [1, 2]}')]
    )
    assert task["priority"] == "normal"
    assert "data" not in task  # the API already has it
    stored = await task_rows.get_task(conn, task["id"])
    assert (stored["state"], stored["data"]) == ("available", '{"k": [1, 2]}')
    with pytest.raises(TaskNotFound):
        await task_rows.get_task(conn, 999)
    cancelled = await task_rows.cancel_task(conn, task["id"])
    assert cancelled["state"] == "cancelled"
    assert cancelled["finished_at"] is not None
    with pytest.raises(InvalidTransition) as info:
        await task_rows.cancel_task(conn, task["id"])
    assert info.value.state == "cancelled"
    retried = await task_rows.retry_task(conn, task["id"])
    assert (retried["state"], retried["attempts"], retried["finished_at"]) == ("available", 0, None)
    with pytest.raises(InvalidTransition):
        await task_rows.retry_task(conn, task["id"])
    with pytest.raises(TaskNotFound):
        await task_rows.retry_task(conn, 999)


async def test_one_task_and_many_give_the_same_rows_and_notify_their_priority(
    database_url: str, conn
) -> None:
    # One task goes through its own VALUES statement, several through unnest: same answer.
    listener = await connect(database_url)
    try:
        await channels.listen(listener, Priority.NORMAL)
        (one,) = await task_rows.insert_task_rows(
            conn, [task_rows.NewRow("ok", 2, 3, '{"k": [1, 2]}')]
        )
        two = await task_rows.insert_task_rows(
            conn, [task_rows.NewRow("ok", 2, 3, '{"k": [1, 2]}')] * 2
        )
        await asyncio.sleep(0.2)
        payloads = []
        while not listener.notifies.empty():
            payloads.append(listener.notifies.get_nowait().payload)
    finally:
        listener.close()
    assert payloads == [str(one["id"]), ""]  # a lone task names itself; a group does not
    shown = await task_rows.get_task(conn, one["id"])
    assert one == {k: v for k, v in shown.items() if k not in ("data", "result")}
    different = {"id", "inserted_at", "updated_at", "scheduled_at"}
    assert {k: v for k, v in one.items() if k not in different} == {
        k: v for k, v in two[0].items() if k not in different
    }
    assert await _prepared(conn) == ["asynctask_insert_many", "asynctask_insert_one"]


async def test_list_tasks_filters_and_pages_by_keyset(conn) -> None:
    for i in range(5):
        await task_rows.insert_task_rows(
            conn, [task_rows.NewRow("ok" if i % 2 else "report", 1 + i % 3, 5, "{}")]
        )
    page = await task_rows.list_tasks(conn, max_bytes=1 << 20, limit=2)
    assert [t["id"] for t in page] == [5, 4]
    page = await task_rows.list_tasks(conn, max_bytes=1 << 20, limit=2, before_id=4)
    assert [t["id"] for t in page] == [3, 2]
    assert [
        t["id"] for t in await task_rows.list_tasks(conn, max_bytes=1 << 20, limit=10, type_="ok")
    ] == [4, 2]
    assert [
        t["id"]
        for t in await task_rows.list_tasks(
            conn, max_bytes=1 << 20, limit=10, priority=Priority.HIGH
        )
    ] == [4, 1]
    assert await task_rows.list_tasks(conn, max_bytes=1 << 20, limit=10, state="failed") == []


async def test_insert_tasks_keeps_request_order_and_notifies_once_per_priority(
    database_url: str, conn
) -> None:
    listener = await connect(database_url)
    try:
        for priority in Priority:
            await channels.listen(listener, priority)
        ids = await task_rows.insert_tasks(
            conn,
            [
                task_rows.NewRow("ok", 3, 5, "{}"),
                task_rows.NewRow("ok", 1, 5, '{"a": 1}'),
                task_rows.NewRow("ok", 3, 2, "{}"),
            ],
        )
        assert ids == sorted(ids) and len(ids) == 3
        await asyncio.sleep(0.2)
        seen = []
        while not listener.notifies.empty():
            seen.append(listener.notifies.get_nowait().channel)
        assert sorted(seen) == ["tasks_high", "tasks_low"]
        assert (await task_rows.get_task(conn, ids[1]))["data"] == '{"a": 1}'
    finally:
        listener.close()


async def test_connection_limits_and_ping(conn) -> None:
    max_connections, reserved = await connections.connection_limits(conn)
    assert max_connections > reserved >= 0
    await connections.ping(conn)


async def test_unreachable_server_is_database_unavailable_with_redacted_url() -> None:
    url = "postgresql://user:secret@127.0.0.1:1/nodb"
    with pytest.raises(DatabaseUnavailable) as info:
        await connect(url, timeout=2)
    assert "secret" not in str(info.value)
    assert "user:***@127.0.0.1:1" in str(info.value)


def test_redact_leaves_passwordless_urls_alone() -> None:
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
    assert redact("postgresql://u:p@h/d") == "postgresql://u:***@h/d"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:p%40ss@h:5432/d", "postgresql://u:***@h:5432/d"),
        (
            "postgresql://h/d?password=secret&sslmode=require",
            "postgresql://h/d?password=***&sslmode=require",
        ),
        # schema.py connects to the maintenance database with the URL in key=value form
        (
            "user=u password=pa&ss dbname=postgres host=h",
            "user=u password=*** dbname=postgres host=h",
        ),
        ("host=h password='a b\\' c' dbname=d", "host=h password=*** dbname=d"),
    ],
)
def test_redact_hides_the_password_of_every_form(dsn: str, shown: str) -> None:
    assert redact(dsn) == shown


async def test_an_unknown_role_names_the_server_without_its_password() -> None:
    # The error of `asynctask migrate` (ensure_database) for a role that does not exist.
    url = "postgresql://nosuchuser:hunter2@127.0.0.1:5432/asynctask"
    with pytest.raises(DatabaseUnavailable) as info:
        await schema.ensure_database(url)
    assert "hunter2" not in str(info.value) and "password=***" in str(info.value)


async def test_ensure_database_creates_once(database_url: str) -> None:
    name = f"asynctask_new_{uuid.uuid4().hex[:8]}"
    url = psycopg2.extensions.make_dsn(database_url, dbname=name)
    try:
        assert await schema.ensure_database(url) is True
        assert await schema.ensure_database(url) is False
    finally:
        admin = await connect(psycopg2.extensions.make_dsn(database_url, dbname="postgres"))
        async with admin.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


async def test_ensure_database_without_create_privilege_names_the_url(database_url: str) -> None:
    role = f"nocreate_{uuid.uuid4().hex[:8]}"
    admin = await connect(database_url)
    async with admin.cursor() as cur:
        await cur.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    try:
        url = psycopg2.extensions.make_dsn(database_url, user=role, dbname="asynctask_missing_db")
        with pytest.raises(DatabaseError, match="does not exist and this role may not create it"):
            await schema.ensure_database(url)
    finally:
        async with admin.cursor() as cur:
            await cur.execute(f"DROP ROLE {role}")
        admin.close()


async def test_connections_notice_a_vanished_peer_unless_the_url_says_otherwise(
    database_url: str,
) -> None:
    conn = await connect(database_url)
    assert "keepalives=1" in conn.raw.dsn and "tcp_user_timeout=10000" in conn.raw.dsn
    conn.close()
    own = psycopg2.extensions.make_dsn(database_url, keepalives_idle="60")
    conn = await connect(own)
    assert "keepalives_idle=60" in conn.raw.dsn and "keepalives_idle=10" not in conn.raw.dsn
    conn.close()
