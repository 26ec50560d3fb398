"""Database outages: the API answers 503 quickly and recovers; workers back off and resume.

The outage is simulated on this test's database only (tests/outage.py): the shared server is
never restarted here. bench/chaos.py restarts it for real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.service.app import create_app
from tests.conftest import make_config
from tests.outage import database_down, terminate_sessions
from tests.procs import children, count, insert_many, listening, pid_of, stop, supervisor
from tests.waiting import wait_until as wait_sync

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
# Generous: the mechanism is connect_timeout_seconds (5 s) at worst; a refused connection is ms.
BOUND_SECONDS = 10.0
POOL_SIZE = 5


def _routes(available: int, failed: int) -> list[tuple[str, str, Any]]:
    """Every route that needs the database, with a body that succeeds when it is there."""
    return [
        ("POST", "/api/tasks", {"type": "ok"}),
        ("POST", "/api/tasks/batch", {"tasks": [{"type": "ok"}, {"type": "ok"}]}),
        ("GET", f"/api/tasks/{available}", None),
        ("GET", "/api/tasks?limit=5", None),
        ("POST", f"/api/tasks/{available}/cancel", None),
        ("POST", f"/api/tasks/{failed}/retry", None),
        ("GET", "/api/stats", None),
    ]


async def _call(client: Client, method: str, path: str, body: Any) -> tuple[int, float, Any]:
    """(status, seconds taken, JSON body) of one request; a hang fails the test."""
    started = time.monotonic()
    async with asyncio.timeout(BOUND_SECONDS * 3):
        response = await client.request(method, path, json=body)
        payload = await response.json()
    elapsed = time.monotonic() - started
    assert response.status != 500, payload
    if response.status == 503 and path != "/ready":  # /ready has its own shape, no Retry-After
        assert response.headers.get("Retry-After") == "1" and payload["error"]
    return response.status, elapsed, payload


async def _until_status(client: Client, method: str, path: str, body: Any, want: int) -> float:
    """Repeat one request until it answers `want`; every answer is bounded and never a 500."""
    deadline = time.monotonic() + BOUND_SECONDS
    while True:
        status, elapsed, payload = await _call(client, method, path, body)
        assert elapsed < BOUND_SECONDS, f"{method} {path} took {elapsed:.1f} s"
        if status == want:
            return elapsed
        assert time.monotonic() < deadline, f"{method} {path}: {status} {payload}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def client(aiohttp_client: MakeClient, database_url: str) -> Client:
    config = make_config(database_url, database__pool_size=POOL_SIZE)
    return await aiohttp_client(create_app(config))


async def _seed(client: Client, sql: Cursor) -> tuple[int, int]:
    """An available task and a failed one, and a pool with several open connections."""
    available = (await (await client.post("/api/tasks", json={"type": "ok"})).json())["id"]
    failed = (await (await client.post("/api/tasks", json={"type": "ok"})).json())["id"]
    sql.execute("UPDATE tasks SET state = 'failed', finished_at = now() WHERE id = %s", (failed,))
    # Concurrent requests make the pool open more than one connection: all of them go stale.
    await asyncio.gather(*(client.get(f"/api/tasks/{available}") for _ in range(POOL_SIZE)))
    return available, failed


async def test_every_route_is_503_quickly_while_the_database_is_away_then_recovers(
    client: Client, sql: Cursor, database_url: str
) -> None:
    available, failed = await _seed(client, sql)
    routes = _routes(available, failed)
    with database_down(database_url):
        for method, path, body in routes:
            await _until_status(client, method, path, body, 503)
        # More concurrent requests than the pool has connections: none may queue forever.
        answers = await asyncio.gather(
            *(_call(client, m, p, b) for m, p, b in routes * 3), return_exceptions=True
        )
        for answer in answers:
            assert not isinstance(answer, BaseException), answer
            status, elapsed, _ = answer
            assert status == 503 and elapsed < BOUND_SECONDS
        await _until_status(client, "GET", "/ready", None, 503)
        assert (await client.get("/health")).status == 200
        assert (await client.get("/metrics")).status == 200
    await _until_status(client, "GET", "/ready", None, 200)
    wanted = [201, 201, 200, 200, 200, 200, 200]
    for (method, path, body), want in zip(routes, wanted, strict=True):
        await _until_status(client, method, path, body, want)
    # Recovered for good: the same requests succeed at once (cancel is now a 409, retry too).
    for (method, path, body), want in zip(routes, [201, 201, 200, 200, 409, 409, 200], strict=True):
        status, _, payload = await _call(client, method, path, body)
        assert status == want, (method, path, payload)


async def test_stale_pooled_connections_after_a_server_side_kill_are_never_a_500(
    client: Client, sql: Cursor, database_url: str
) -> None:
    available, _ = await _seed(client, sql)
    assert terminate_sessions(database_url) >= 2  # the pool's connections and `sql`
    statuses = []
    for _ in range(POOL_SIZE + 2):
        status, elapsed, _ = await _call(client, "GET", f"/api/tasks/{available}", None)
        statuses.append(status)
        assert status in (200, 503) and elapsed < BOUND_SECONDS
    assert statuses[-1] == 200, statuses  # each stale connection is dropped, not reused


def test_workers_survive_an_outage_and_finish_everything(
    database_url: str, executions: Cursor
) -> None:
    sql = executions
    config = make_config(
        database_url,
        priority_queues={"high": 2, "normal": 1, "low": 0},
        lease_seconds=3,
        timeout_milliseconds=200,
    )
    insert_many(sql, 40, "record", '{"seconds": 0.05}', priority=1)
    insert_many(sql, 20, "record", '{"seconds": 0.05}', priority=2)
    with supervisor(config, sql) as process:
        before = children(pid_of(process))
        wait_sync(lambda: count(sql, "state = 'completed'") >= 5)
        with database_down(database_url):
            # Longer than the lease: claims held across the outage expire, so their outcomes may
            # be refused afterwards and the tasks run again (at-least-once).
            time.sleep(5)
        sql = _reconnect(database_url)
        wait_sync(lambda: count(sql, "state = 'completed'") == 60, timeout=60)
        wait_sync(lambda: listening(sql) == 3, timeout=20)  # LISTEN re-established everywhere
        after = children(pid_of(process))
        assert stop(process) == 0
    # No crash loop: the same processes carried on (a worker may exist in both only by name).
    assert after == before
    assert count(sql, "state = 'running'") == 0
    sql.execute("SELECT count(DISTINCT task_id) FROM executions")
    row = sql.fetchone()
    assert row is not None and row[0] == 60  # every completed task really ran


def _reconnect(url: str) -> Cursor:
    """A new autocommit cursor: the outage killed the fixture's session."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn.cursor()
