"""asynctask behind a real PgBouncer: which pool mode works for which process, and what breaks.

Supported: everything through session pooling; the API (and migrate) through transaction pooling
with `database.prepared_statements: false`, the workers direct or through session pooling. The
workers cannot use transaction pooling: their LISTEN and their prepared claim need a session.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg2
import psycopg2.errors
import pytest

from asynctask.core import channels, connections, task_rows
from asynctask.core.connections import acquire, connect, create_pool
from asynctask.core.models import Priority
from tests.pgbouncer import Bouncer, pgbouncer
from tests.processes import asynctask, env, free_port, start, stop, wait_http
from tests.waiting import wait_until

CONFIG = {
    "database": {"pool_size": 4},
    "priority_queues": {"high": 2, "normal": 1, "low": 1},
    # A minute between polls: a task created after the workers' start-up look is only found in
    # time if its NOTIFY reaches a LISTENing worker through the pool.
    "timeout_milliseconds": 60_000,
    "log_level": "WARNING",
    "handlers": {"report": "asynctask.workers.handlers:report"},
}
ROUNDS, CLIENTS, BATCH = 3, 32, 50


@pytest.fixture
def bouncer(database_url: str) -> Iterator[Bouncer]:
    with pgbouncer(database_url) as running:
        yield running


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(CONFIG))  # JSON is YAML
    return path


async def _create_all(port: int) -> list[int]:
    """ROUNDS of CLIENTS concurrent single creates, then two batches; every answer's status."""
    url = f"http://127.0.0.1:{port}/api/tasks"
    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: object) -> int:
            async with session.post(url + path, json=body) as response:
                await response.read()
                return response.status

        statuses = []
        for _ in range(ROUNDS):
            single = {"type": "report", "priority": "high"}
            statuses += await asyncio.gather(*(post("", single) for _ in range(CLIENTS)))
        batch = {"tasks": [{"type": "report", "priority": "normal"}] * BATCH}
        statuses += await asyncio.gather(post("/batch", batch), post("/batch", batch))
    return statuses


async def _read_routes(port: int) -> list[int]:
    """The other routes that touch the database (a completed task cannot be cancelled: 409)."""
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        statuses = []
        for method, path in [
            ("GET", "/api/tasks?limit=10&state=completed"),
            ("GET", "/api/tasks/1"),
            ("GET", "/api/stats"),
            ("GET", "/metrics"),
            ("POST", "/api/tasks/1/cancel"),
        ]:
            async with session.request(method, base + path) as response:
                await response.read()
                statuses.append(response.status)
    return statuses


def _run(
    config: Path, sql: psycopg2.extensions.cursor, api_url: str, workers_url: str, **api_env: str
) -> None:
    """API and workers as real processes; every create is answered 201 and its task completes."""
    port = free_port()
    api = start(["api", "--port", str(port)], api_url, ASYNCTASK_CONFIG=str(config), **api_env)
    workers = start(["workers"], workers_url, ASYNCTASK_CONFIG=str(config))
    try:
        wait_http(f"http://127.0.0.1:{port}/ready")
        statuses = asyncio.run(_create_all(port))
        assert statuses == [201] * (ROUNDS * CLIENTS + 2)
        total = ROUNDS * CLIENTS + 2 * BATCH

        def all_completed() -> bool:
            sql.execute("SELECT count(*) FROM tasks WHERE state = 'completed'")
            return bool((sql.fetchone() or (0,))[0] == total)

        wait_until(all_completed, timeout=30, interval=0.1)
        assert asyncio.run(_read_routes(port)) == [200, 200, 200, 200, 409]
    finally:
        codes = [stop(api), stop(workers)]
    assert codes == [0, 0]


def _migrate(url: str, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(asynctask("migrate"), env=env(url, ASYNCTASK_CONFIG=str(config)))


def test_session_pooling_serves_migrate_api_and_workers_as_they_are(
    bouncer: Bouncer, config_path: Path, sql: psycopg2.extensions.cursor
) -> None:
    url = bouncer.url("session")
    assert _migrate(url, config_path).wait(30) == 0
    _run(config_path, sql, api_url=url, workers_url=url)


@pytest.mark.parametrize("workers_via", ["direct", "session"])
def test_transaction_pooling_serves_the_api_without_prepared_statements(
    workers_via: str,
    bouncer: Bouncer,
    database_url: str,
    config_path: Path,
    sql: psycopg2.extensions.cursor,
) -> None:
    # Two migrations at once while another client holds a server session in a transaction: the
    # migration's advisory lock lives in its one transaction, so none is left behind.
    holder = psycopg2.connect(bouncer.url("tx"))
    with holder.cursor() as cur:
        cur.execute("SELECT 1")
        migrations = [_migrate(bouncer.url("tx"), config_path) for _ in range(2)]
        assert [m.wait(30) for m in migrations] == [0, 0]
    holder.close()
    sql.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert sql.fetchone() == (0,)
    workers_url = database_url if workers_via == "direct" else bouncer.url("session")
    _run(
        config_path,
        sql,
        api_url=bouncer.url("tx"),
        workers_url=workers_url,
        ASYNCTASK_DATABASE_PREPARED_STATEMENTS="false",
    )


REPORT = task_rows.NewRow("report", 1, 5, "{}")


async def test_transaction_pooling_breaks_prepared_statements_and_listen(
    bouncer: Bouncer, sql: psycopg2.extensions.cursor
) -> None:
    # tx1 has one server session, so the second client's transactions run where the first's ran.
    url = bouncer.url("tx1")
    first, second = await connect(url), await connect(url)
    try:
        await task_rows.insert_task_rows(first, [REPORT])
        with pytest.raises(psycopg2.errors.DuplicatePreparedStatement):
            await task_rows.insert_task_rows(second, [REPORT])
        await channels.listen(first, Priority.HIGH)
        sql.execute("NOTIFY tasks_high, 'lost'")  # arrives while the session sits in the pool
        await asyncio.sleep(0.3)
        await connections.ping(first)
        assert first.notifies.empty()
    finally:
        first.close()
        second.close()
    unprepared = await create_pool(url, 2, 5.0, prepared_statements=False)
    try:
        async with acquire(unprepared, 5.0) as a, acquire(unprepared, 5.0) as b:
            created = await asyncio.gather(
                task_rows.insert_task_rows(a, [REPORT]), task_rows.insert_task_rows(b, [REPORT])
            )
    finally:
        unprepared.close()
        await unprepared.wait_closed()
    assert len({rows[0]["id"] for rows in created}) == 2
