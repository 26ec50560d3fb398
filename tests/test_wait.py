"""Wait-for-result: GET /api/tasks/{id}?wait_seconds=N, the tasks_finished NOTIFY, one LISTEN."""

from __future__ import annotations

import asyncio
import select
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import aiopg
import psycopg2
import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.core import claims, result_listeners
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.lifecycle import Decision, Outcome
from asynctask.core.models import Priority, State
from asynctask.core.schema import schema_sql
from asynctask.core.sql import QUERIES, inline_params
from asynctask.service import keys
from asynctask.service.app import create_app
from tests.conftest import make_config
from tests.waiting import wait_until, wait_until_async

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
# Long enough that an answer before it can only come from the notification, never the deadline.
LONG_WAIT = 30


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


@pytest.fixture
def finished_listener(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection that LISTENs on tasks_finished and is registered as an API's would be."""
    conn = _listening(database_url)
    _register(conn)
    yield conn
    conn.close()


def _listening(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("LISTEN tasks_finished")
    return conn


def _register(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        query = QUERIES["register_result_listener"]
        cur.execute(query.inline, inline_params((result_listeners.FENCE_LOCK,)))


def _payloads(conn: psycopg2.extensions.connection, wait: float = 0.5) -> list[str]:
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        select.select([conn], [], [], left)
        conn.poll()
    found = [n.payload for n in conn.notifies]
    conn.notifies.clear()
    return found


async def _create(client: Client, **fields: Any) -> int:
    response = await client.post("/api/tasks", json={"type": "ok", "priority": "high", **fields})
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def _claim_all(conn: aiopg.Connection, limit: int = 1000) -> tuple[str, set[int]]:
    """Claim every due high task (as a worker would): the claim token and the ids."""
    token = str(uuid.uuid4())
    claimed = await claims.claim(
        conn,
        priority=Priority.HIGH,
        limit=limit,
        locked_by="test:1:high_1",
        token=token,
        lease_seconds=60,
        max_bytes=2**40,
    )
    return token, {row["id"] for row in claimed}


async def _finish(url: str, states: dict[int, State], limit: int = 1000) -> int:
    """Claim every due high task, then write `states` for the ids named (as a worker would)."""
    conn = await connect(url)
    try:
        token, claimed = await _claim_all(conn, limit)
        assert claimed >= set(states)
        outcomes = [
            Outcome(i, token, Decision(s, 0 if s is State.RETRYING else None))
            for i, s in states.items()
        ]
        return await claims.finish(conn, outcomes)
    finally:
        conn.close()


async def _waiting(client: Client, count: int) -> None:
    waiters = client.app[keys.WAITERS]
    await wait_until_async(lambda: waiters.waiting >= count)


# --- the route ------------------------------------------------------------------------------------


async def test_a_waiter_is_answered_when_its_task_completes(
    client: Client, database_url: str
) -> None:
    task_id = await _create(client)
    waiter = asyncio.create_task(client.get(f"/api/tasks/{task_id}?wait_seconds={LONG_WAIT}"))
    await _waiting(client, 1)
    assert not waiter.done()
    assert await _finish(database_url, {task_id: State.COMPLETED}) == 1
    response = await asyncio.wait_for(waiter, 10)
    assert response.status == 200
    body = await response.json()
    assert body["id"] == task_id and body["state"] == "completed" and body["finished_at"]
    assert client.app[keys.WAITERS].waiting == 0


async def test_a_retry_does_not_answer_but_the_final_failure_does(
    client: Client, database_url: str
) -> None:
    task_id = await _create(client, max_attempts=2)
    waiter = asyncio.create_task(client.get(f"/api/tasks/{task_id}?wait_seconds={LONG_WAIT}"))
    await _waiting(client, 1)
    await _finish(database_url, {task_id: State.RETRYING})
    await asyncio.sleep(0.3)
    assert not waiter.done()  # retrying is not final: still waiting
    await _finish(database_url, {task_id: State.FAILED})
    body = await (await asyncio.wait_for(waiter, 10)).json()
    assert body["state"] == "failed"


async def test_a_cancel_answers_its_waiters(client: Client) -> None:
    task_id = await _create(client)
    waiters = [
        asyncio.create_task(client.get(f"/api/tasks/{task_id}?wait_seconds={LONG_WAIT}"))
        for _ in range(3)
    ]
    await _waiting(client, 3)
    assert (await client.post(f"/api/tasks/{task_id}/cancel")).status == 200
    for waiter in waiters:
        body = await (await asyncio.wait_for(waiter, 10)).json()
        assert body["state"] == "cancelled"


async def test_the_wait_ends_with_the_task_as_it_is(client: Client) -> None:
    task_id = await _create(client)
    response = await client.get(f"/api/tasks/{task_id}?wait_seconds=0.3")
    assert response.status == 200
    assert (await response.json())["state"] == "available"
    assert client.app[keys.WAITERS].waiting == 0


async def test_a_final_task_answers_at_once_and_a_missing_one_is_404(
    client: Client, database_url: str
) -> None:
    task_id = await _create(client)
    await _finish(database_url, {task_id: State.COMPLETED})
    response = await asyncio.wait_for(
        client.get(f"/api/tasks/{task_id}?wait_seconds={LONG_WAIT}"), 10
    )
    assert (await response.json())["state"] == "completed"
    missing = await asyncio.wait_for(client.get(f"/api/tasks/99999?wait_seconds={LONG_WAIT}"), 10)
    assert missing.status == 404
    assert "99999" in (await missing.json())["error"]


@pytest.mark.parametrize("value", ["-1", "60.5", "abc", "nan", "inf", ""])
async def test_wait_seconds_out_of_range_is_422(client: Client, value: str) -> None:
    task_id = await _create(client)
    response = await client.get(f"/api/tasks/{task_id}", params={"wait_seconds": value})
    assert response.status == 422
    body = await response.json()
    assert body["fields"] == {"wait_seconds": ["Must be a number from 0 to 60."]}


async def test_the_configured_maximum_shortens_the_wait(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    config = make_config(database_url, api__max_wait_seconds=0.5)
    client = await aiohttp_client(create_app(config))
    task_id = await _create(client)
    # 60 is within the API's range; this server waits only half a second of it.
    response = await asyncio.wait_for(client.get(f"/api/tasks/{task_id}?wait_seconds=60"), 10)
    assert response.status == 200 and (await response.json())["state"] == "available"


# --- one LISTEN, no pool connection per waiter ----------------------------------------------------


def _connections(sql: Cursor) -> dict[str, int]:
    sql.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " GROUP BY application_name"
    )
    return dict(sql.fetchall())


async def test_many_waiters_share_one_listening_connection(
    client: Client, database_url: str, sql: Cursor
) -> None:
    ids = [await _create(client) for _ in range(300)]
    # One session without the default limit of 100 connections: all 300 wait at once.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        waiters = [
            asyncio.create_task(
                session.get(client.make_url(f"/api/tasks/{i}?wait_seconds={LONG_WAIT}"))
            )
            for i in ids
        ]
        await _waiting(client, len(ids))
        connections = _connections(sql)
        assert connections.pop("asynctask api listener") == 1
        pool_size = client.app[keys.CONFIG].database.pool_size
        assert sum(connections.values()) <= pool_size  # the pool, however many wait
        assert client.app[keys.WAITERS].connects == 1
        await _finish(database_url, dict.fromkeys(ids, State.COMPLETED))
        answers = await asyncio.wait_for(asyncio.gather(*waiters), 20)
        assert {(await r.json())["state"] for r in answers} == {"completed"}


async def test_waiters_recover_from_a_lost_listening_connection(
    client: Client, database_url: str, sql: Cursor
) -> None:
    task_id = await _create(client)
    waiter = asyncio.create_task(client.get(f"/api/tasks/{task_id}?wait_seconds={LONG_WAIT}"))
    await _waiting(client, 1)
    sql.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'asynctask api listener' AND datname = current_database()"
    )
    waiters = client.app[keys.WAITERS]
    await wait_until_async(lambda: waiters.connects == 2)
    await _finish(database_url, {task_id: State.COMPLETED})
    body = await (await asyncio.wait_for(waiter, 10)).json()
    assert body["state"] == "completed"


async def test_shutdown_answers_every_waiter_at_once(client: Client) -> None:
    task_id = await _create(client)
    waiter = asyncio.create_task(client.get(f"/api/tasks/{task_id}?wait_seconds={LONG_WAIT}"))
    await _waiting(client, 1)
    await client.app[keys.WAITERS].close()  # what the app's on_shutdown does
    body = await (await asyncio.wait_for(waiter, 10)).json()
    assert body["state"] == "available"


# --- the NOTIFY -----------------------------------------------------------------------------------


async def test_finish_sends_one_notify_naming_the_finished_tasks(
    client: Client, database_url: str, finished_listener: psycopg2.extensions.connection
) -> None:
    a, b, c, d = [await _create(client) for _ in range(4)]
    states = {a: State.COMPLETED, b: State.FAILED, c: State.RETRYING, d: State.CANCELLED}
    assert await _finish(database_url, states) == 4
    (payload,) = _payloads(finished_listener)
    assert sorted(map(int, payload.split(","))) == sorted([a, b, d])
    e = await _create(client)
    await _finish(database_url, {e: State.RETRYING})
    assert _payloads(finished_listener) == []  # nothing finished, nothing sent


async def test_a_finish_notifies_only_while_a_result_listener_is_registered(
    client: Client, database_url: str, sql: Cursor
) -> None:
    unregistered = _listening(database_url)  # LISTENs, as the workers' leaders do, unregistered
    a = await _create(client)
    await _finish(database_url, {a: State.COMPLETED})
    assert _payloads(unregistered) == []  # nobody waits for results: no NOTIFY
    _register(unregistered)
    b = await _create(client)
    await _finish(database_url, {b: State.COMPLETED})
    assert _payloads(unregistered) == [str(b)]
    unregistered.close()
    # Its backend is gone: the next registration forgets it, and so does a worker's prune.
    wait_until(lambda: _listener_pids(sql) != [] and not _alive(sql, _listener_pids(sql)))
    newcomer = _listening(database_url)
    _register(newcomer)
    assert _listener_pids(sql) == [newcomer.get_backend_pid()]
    newcomer.close()


async def test_a_registration_waits_for_the_finishes_in_flight(
    client: Client, database_url: str, sql: Cursor
) -> None:
    # A finish that read no registration must commit before one is made: the API's waiters read
    # their tasks after registering, so they then see it final (they would get no NOTIFY for it).
    task_id = await _create(client)
    conn = await connect(database_url)
    listener = _listening(database_url)
    try:
        token, _ = await _claim_all(conn)
        async with conn.cursor() as cur:
            await cur.execute("BEGIN")
        assert await claims.finish(conn, [Outcome(task_id, token, Decision(State.COMPLETED))]) == 1
        registering = asyncio.create_task(asyncio.to_thread(_register, listener))
        await wait_until_async(lambda: _waits_for_a_lock(sql, listener.get_backend_pid()))
        assert not registering.done()
        async with conn.cursor() as cur:
            await cur.execute("COMMIT")
        await asyncio.wait_for(registering, 10)
    finally:
        conn.close()
    sql.execute("SELECT state FROM tasks WHERE id = %s", (task_id,))
    assert sql.fetchone() == ("completed",)
    assert _payloads(listener) == []  # the finish read no registration, and sent nothing
    listener.close()


async def test_a_stopping_api_unregisters_its_listener(
    aiohttp_client: MakeClient, config: Config, database_url: str, sql: Cursor
) -> None:
    client = await aiohttp_client(create_app(config))
    task_id = await _create(client)
    await _finish(database_url, {task_id: State.COMPLETED})
    await client.get(f"/api/tasks/{task_id}?wait_seconds=1")  # opens and registers the listener
    assert len(_listener_pids(sql)) == 1
    await client.close()
    assert _listener_pids(sql) == []


def _listener_pids(sql: Cursor) -> list[int]:
    sql.execute("SELECT pid FROM result_listeners ORDER BY pid")
    return [row[0] for row in sql.fetchall()]


def _alive(sql: Cursor, pids: list[int]) -> bool:
    sql.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
    return bool(sql.fetchone()[0] == len(pids))  # type: ignore[index]


def _waits_for_a_lock(sql: Cursor, pid: int) -> bool:
    sql.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return sql.fetchone() == ("Lock",)


async def test_a_finish_too_long_to_name_sends_an_empty_payload(
    client: Client,
    sql: Cursor,
    database_url: str,
    finished_listener: psycopg2.extensions.connection,
) -> None:
    # 2,000 ids of up to 4 digits with commas: over 8,000 bytes, too long for one payload.
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'ok', 1 FROM generate_series(1, 2000)")
    sql.execute("SELECT id FROM tasks")
    ids = [row[0] for row in sql.fetchall()]
    assert await _finish(database_url, dict.fromkeys(ids, State.COMPLETED), limit=2000) == 2000
    assert _payloads(finished_listener) == [""]


async def test_an_empty_payload_wakes_every_waiter(client: Client, sql: Cursor) -> None:
    task_id = await _create(client)
    waiter = asyncio.create_task(client.get(f"/api/tasks/{task_id}?wait_seconds={LONG_WAIT}"))
    await _waiting(client, 1)
    sql.execute(f"UPDATE tasks SET state = 'completed', finished_at = now() WHERE id = {task_id}")
    sql.execute("NOTIFY tasks_finished")  # from plain SQL: no ids, every waiter re-reads
    body = await (await asyncio.wait_for(waiter, 10)).json()
    assert body["state"] == "completed"


def test_the_schema_fences_with_the_lock_registrations_take() -> None:
    function = schema_sql().split("FUNCTION asynctask_notify_finished")[1].split("END $$")[0]
    assert f"pg_advisory_xact_lock_shared({result_listeners.FENCE_LOCK})" in function
