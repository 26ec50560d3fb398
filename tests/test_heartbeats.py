"""The worker registry: heartbeats of real workers, GET /api/workers, and dead hosts rescued."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg2.extensions
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.core import claims, heartbeats
from asynctask.core.config import Config
from asynctask.core.lifecycle import Decision, Outcome
from asynctask.core.models import Priority, State
from asynctask.service.app import create_app
from asynctask.workers.connection import QueryConnection
from asynctask.workers.watch import Watch
from tests.conftest import make_config
from tests.procs import children, count, kill_tree, pid_of, stop, supervisor
from tests.test_worker import fetch
from tests.waiting import wait_until

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
HOST = socket.gethostname()


def rows(sql: Cursor, where: str = "true") -> list[dict[str, Any]]:
    sql.execute(f"SELECT * FROM workers WHERE {where} ORDER BY supervisor_pid, slot")
    names = [column.name for column in sql.description or ()]
    return [dict(zip(names, row, strict=True)) for row in sql.fetchall()]


def alive(sql: Cursor, supervisor_pid: int) -> bool:
    sql.execute(
        "SELECT bool_or(heartbeat_at >= now() - %s * interval '1 second') FROM workers"
        " WHERE supervisor_pid = %s",
        (heartbeats.DEAD_AFTER_SECONDS, supervisor_pid),
    )
    return bool(fetch(sql)[0])


def insert_task(sql: Cursor, type_: str, data: str = "{}", priority: int = 1) -> int:
    sql.execute(
        "INSERT INTO tasks (type, priority, data) VALUES (%s, %s, %s) RETURNING id",
        (type_, priority, data),
    )
    return int(fetch(sql)[0])


async def test_every_slot_beats_and_the_api_groups_them_by_supervisor(
    aiohttp_client: MakeClient, database_url: str, sql: Cursor
) -> None:
    config = make_config(database_url, priority_queues={"high": 2, "normal": 1, "low": 0})
    client = await aiohttp_client(create_app(config))
    busy = insert_task(sql, "sleepy", '{"seconds": 30}', priority=2)
    with supervisor(config, sql) as process:
        settled = [("busy", busy), ("idle", None), ("idle", None)]
        wait_until(
            lambda: (
                sorted(((r["status"], r["task_id"]) for r in rows(sql)), key=str)
                == sorted(settled, key=str)
            ),
            timeout=10,
        )
        procs = children(pid_of(process))
        body = await (await client.get("/api/workers")).json()
        os.kill(procs["asynctask worker high_2"], signal.SIGKILL)
        wait_until(lambda: rows(sql, "slot = 'high_2'")[0]["restarts"] == 1, timeout=15)
        restarted = rows(sql, "slot = 'high_2'")[0]
        assert stop(process, timeout=40) == 0
    assert body["heartbeat_seconds"] == 2.0 and body["dead_after_seconds"] == 5.0
    (found,) = body["supervisors"]
    assert (found["host"], found["pid"], found["alive"]) == (HOST, process.pid, True)
    assert found["rescued_at"] is None and found["up_since"] <= found["last_heartbeat"]
    slots = {s["slot"]: s for s in found["slots"]}
    assert list(slots) == ["high_1", "high_2", "normal_1"]
    for name, slot in slots.items():
        assert slot["pid"] == procs[f"asynctask worker {name}"] and slot["alive"]
        assert slot["restarts"] == 0 and slot["priority"] == name.split("_")[0]
    assert slots["normal_1"]["status"] == "busy" and slots["normal_1"]["task_id"] == busy
    assert slots["high_1"]["status"] == "idle" and slots["high_1"]["task_id"] is None
    assert restarted["pid"] != procs["asynctask worker high_2"]
    assert restarted["started_at"] > restarted["first_started_at"]
    assert rows(sql) == []  # a clean stop takes its rows out


def test_a_dead_host_shows_dead_and_its_tasks_are_rescued_at_once(
    database_url: str, executions: Cursor
) -> None:
    sql = executions
    # Long leases: only the heartbeats can explain a quick rescue.
    config = make_config(
        database_url, priority_queues={"high": 1, "normal": 0, "low": 0}, lease_seconds=120
    )
    task = insert_task(sql, "record", '{"seconds": 60}')
    with supervisor(config, sql) as doomed:
        wait_until(lambda: count(sql, "state = 'running'") == 1)
        with supervisor(config, sql) as survivor:
            wait_until(lambda: len({r["supervisor_pid"] for r in rows(sql)}) == 2)
            kill_tree(doomed)  # the whole "host": supervisor and workers, at once
            killed = time.monotonic()
            wait_until(lambda: not alive(sql, pid_of(doomed)), timeout=15, interval=0.05)
            shown_dead = time.monotonic() - killed
            wait_until(lambda: count(sql, f"id = {task} AND attempts = 2") == 1, timeout=15)
            rescued = time.monotonic() - killed
            (dead,) = rows(sql, f"supervisor_pid = {pid_of(doomed)}")
            assert alive(sql, pid_of(survivor))
    print(
        f"\ndead host: shown dead after {shown_dead:.1f} s, its task rescued after {rescued:.1f} s"
    )
    assert shown_dead < heartbeats.DEAD_AFTER_SECONDS + heartbeats.HEARTBEAT_SECONDS + 2
    assert rescued < shown_dead + 3  # and far from the 120 s lease
    assert dead["rescued_at"] is not None
    sql.execute("SELECT last_error FROM tasks WHERE id = %s", (task,))
    assert "went silent with its supervisor" in fetch(sql)[0]


async def test_a_slow_host_loses_its_claim_and_cannot_overwrite_the_outcome(
    config: Config, sql: Cursor
) -> None:
    task = insert_task(sql, "ok")
    token = str(uuid.uuid4())
    slow = "farhost:4242:high_1"
    sql.execute(
        "UPDATE tasks SET state = 'running', attempts = 1, locked_by = %s, lock_token = %s,"
        " lease_expires_at = now() + interval '1 hour' WHERE id = %s",
        (slow, token, task),
    )
    sql.execute(
        "INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status,"
        " heartbeat_at) VALUES ('farhost', 7, 'high_1', 1, 4242, %s, 'busy',"
        " now() - interval '10 seconds')",
        (slow,),
    )
    conn = QueryConnection(str(config.database.url), 5)
    try:
        watch = Watch(conn, config, f"{HOST}:{os.getpid()}:high_1", supervisor=1)
        assert await watch.rescue() == 1
        assert await watch.rescue() == 0  # marked rescued: not again
        sql.execute("SELECT state, attempts, locked_by FROM tasks WHERE id = %s", (task,))
        assert fetch(sql) == ("retrying", 1, None)
        (row,) = rows(sql)
        assert row["rescued_at"] is not None
        # The slow host comes back and reports its outcome under its old token: refused.
        late = Outcome(task, token, Decision(State.COMPLETED))
        assert await conn.run(claims.finish, [late]) == 0
        sql.execute("SELECT state FROM tasks WHERE id = %s", (task,))
        assert fetch(sql) == ("retrying",)
        beat = heartbeats.Beat("farhost", 7, "high_1", Priority.HIGH, 4242, slow, "idle")
        await conn.run(heartbeats.heartbeat, beat)
        assert rows(sql)[0]["rescued_at"] is None  # alive again
    finally:
        conn.close()


async def test_old_rows_are_cleaned_up(config: Config, sql: Cursor) -> None:
    for age in ("2 hours", "10 seconds"):
        sql.execute(
            "INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status,"
            " heartbeat_at) VALUES ('h', 1, %s, 1, 1, 'h:1:x', 'idle', now() - %s::interval)",
            (age, age),
        )
    conn = QueryConnection(str(config.database.url), 5)
    try:
        assert await conn.run(heartbeats.forget_old_workers) == 1
    finally:
        conn.close()
    assert [r["slot"] for r in rows(sql)] == ["10 seconds"]
