"""Recovery against a real PostgreSQL: dead workers' tasks are taken over and decided as usual."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg2.extensions
import pytest

from asynctask.core import claims
from asynctask.core.config import Config
from asynctask.core.lifecycle import Event
from asynctask.core.models import Priority
from asynctask.core.sql import QUERIES, inline_params
from asynctask.workers import recovery
from asynctask.workers.connection import QueryConnection
from asynctask.workers.link import DeadWorker
from tests.conftest import make_config

Cursor = psycopg2.extensions.cursor
HOST = "testhost"
ME = f"{HOST}:2:high_3"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[QueryConnection]:
    connection = QueryConnection(database_url, 5.0)
    yield connection
    connection.close()


async def _claim(conn: QueryConnection, limit: int = 10, slot: str = "high_1") -> list[Any]:
    return await conn.run(
        claims.claim,
        priority=Priority.HIGH,
        limit=limit,
        locked_by=f"{HOST}:1:{slot}",
        token=str(uuid.uuid4()),
        lease_seconds=30,
        max_bytes=2**20,
    )


def _state(sql: Cursor, task_id: int) -> tuple[Any, ...]:
    sql.execute(
        "SELECT state, attempts, last_error, locked_by FROM tasks WHERE id = %s", (task_id,)
    )
    row = sql.fetchone()
    assert row is not None
    return row


async def _settle_lowest(conn: QueryConnection, config: Config, lockers: list[str]) -> int:
    token = str(uuid.uuid4())
    held = await conn.run(
        claims.reclaim_lockers, lockers, locked_by=ME, token=token, lease_seconds=30
    )
    blamed = recovery.blame_lowest(held, Event.WORKER_CRASHED, "gone ({holder})")
    return await conn.run(claims.finish, recovery.outcomes(blamed, token, config))


async def test_a_replacement_charges_only_the_running_task(conn, sql, config) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts) SELECT 'ok', 1, 5 FROM"
        " generate_series(1, 4)"
    )
    await _claim(conn)
    dead = DeadWorker(f"{HOST}:1:high_1", "killed by SIGKILL", task_id=2, completed=(1,))
    await recovery.release_leftovers(conn, config, HOST, ME, dead)
    assert _state(sql, 1)[:2] == ("completed", 1)  # finished before the kill, now written
    state, attempts, error, locker = _state(sql, 2)
    assert (state, attempts, locker) == ("retrying", 1, None)
    assert error == "worker high_1 (pid 1) died while running this task: killed by SIGKILL"
    assert _state(sql, 3)[:2] == ("available", 0)  # never started: uncounted
    assert _state(sql, 4)[:2] == ("available", 0)


async def test_a_task_whose_last_attempt_died_fails(conn, sql, config) -> None:
    sql.execute("INSERT INTO tasks (type, priority, max_attempts) VALUES ('ok', 1, 1)")
    await _claim(conn)
    dead = DeadWorker(f"{HOST}:1:high_1", "segfault", task_id=1)
    await recovery.release_leftovers(conn, config, HOST, ME, dead)
    assert _state(sql, 1)[:2] == ("failed", 1)


async def test_a_death_inside_a_claim_charges_every_row_it_took(conn, sql, config) -> None:
    # Whatever killed it came with the claim (a row it could not even receive): each of those
    # rows spends an attempt, so a poison row ends failed instead of killing worker after worker.
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts) VALUES ('ok', 1, 1), ('ok', 1, 3)"
    )
    await _claim(conn)
    dead = DeadWorker(f"{HOST}:1:high_1", "killed by SIGKILL", claiming=True)
    await recovery.release_leftovers(conn, config, HOST, ME, dead)
    assert _state(sql, 1)[:2] == ("failed", 1)
    assert _state(sql, 2)[:2] == ("retrying", 1)
    assert "died claiming this task" in _state(sql, 2)[2]


async def test_a_death_between_tasks_hands_everything_back_uncounted(conn, sql, config) -> None:
    sql.execute("INSERT INTO tasks (type, priority, attempts) VALUES ('ok', 1, 0), ('ok', 1, 2)")
    await _claim(conn)
    dead = DeadWorker(f"{HOST}:1:high_1", "killed by SIGKILL")
    await recovery.release_leftovers(conn, config, HOST, ME, dead)
    assert _state(sql, 1)[:2] == ("available", 0)
    assert _state(sql, 2)[:2] == ("retrying", 2)  # as it was before the claim


async def test_each_dead_process_is_charged_its_lowest_id(conn, sql, config) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts) SELECT 'ok', 1, 1 FROM"
        " generate_series(1, 5)"
    )
    await _claim(conn, limit=3, slot="high_1")  # prefetched 1..3, was running 1
    await _claim(conn, limit=1, slot="high_2")
    await _claim(conn, limit=1, slot="high_4")  # alive: not ours to settle
    assert sorted(await conn.run(claims.running_lockers, HOST)) == [
        f"{HOST}:1:high_1",
        f"{HOST}:1:high_2",
        f"{HOST}:1:high_4",
    ]
    assert await conn.run(claims.running_lockers, "otherhost") == []
    assert await _settle_lowest(conn, config, [f"{HOST}:1:high_1", f"{HOST}:1:high_2"]) == 4
    assert [_state(sql, i)[:2] for i in (1, 2, 3, 4, 5)] == [
        ("failed", 1),
        ("available", 0),
        ("available", 0),
        ("failed", 1),
        ("running", 1),
    ]
    assert _state(sql, 1)[2] == f"gone ({HOST}:1:high_1)"
    assert await _settle_lowest(conn, config, []) == 0


async def test_concurrent_recoverers_take_a_dead_process_over_once(
    database_url: str, conn, sql, config
) -> None:
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'ok', 1 FROM generate_series(1, 50)")
    await _claim(conn, limit=50, slot="high_1")
    others = [QueryConnection(database_url, 5.0) for _ in range(4)]
    try:
        settled = await asyncio.gather(
            *(_settle_lowest(c, config, [f"{HOST}:1:high_1"]) for c in others)
        )
    finally:
        for c in others:
            c.close()
    assert sum(settled) == 50
    sql.execute("SELECT sum(attempts), count(*) FILTER (WHERE state = 'running') FROM tasks")
    assert sql.fetchone() == (1, 0)


async def test_expired_leases_are_rescued_and_extended_ones_are_not(conn, sql, config) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts) VALUES ('ok', 1, 5),"
        " ('ok', 1, 5), ('ok', 1, 1)"
    )
    first = await _claim(conn, limit=2, slot="high_1")
    other = await _claim(conn, limit=1, slot="high_2")
    tokens = [str(_token(sql, first[0]["id"])), str(_token(sql, other[0]["id"]))]
    assert await recovery.rescue_expired(conn, config, ME) == 0
    sql.execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second'")
    ids = [row["id"] for row in first + other]
    assert await conn.run(claims.extend_leases, ids, tokens, 30) == 3
    assert await recovery.rescue_expired(conn, config, ME) == 0
    assert await conn.run(claims.extend_leases, [], [], 30) == 0
    # Only the rows named and held under a named token: not another worker's, not a finished one.
    assert await conn.run(claims.extend_leases, ids[:1], tokens[1:], 30) == 0
    sql.execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second'")
    assert await recovery.rescue_expired(conn, config, ME) == 3
    state, attempts, error, _ = _state(sql, 1)
    assert (state, attempts) == ("retrying", 1)
    assert error == f"lease expired: worker {HOST}:1:high_1 stopped renewing its claim"
    assert _state(sql, 2)[:3] == ("available", 0, None)
    assert _state(sql, 3)[:2] == ("failed", 1)  # its only attempt was spent


def test_extending_leases_reads_its_own_rows_not_every_task_that_ran(sql: Cursor) -> None:
    # Every task passes through running, and until a vacuum tasks_running_idx keeps an entry for
    # each: a lease extension that went through it by token read all their rows (the drain's
    # 0.2-0.4 s a call at a million tasks).
    sql.execute(
        "INSERT INTO tasks (type, priority, state, lease_expires_at, lock_token)"
        " SELECT 'ok', 1, 'running', now(), gen_random_uuid() FROM generate_series(1, 100000)"
    )
    sql.execute("UPDATE tasks SET state = 'completed', finished_at = now()")
    token = str(uuid.uuid4())
    sql.execute(
        "INSERT INTO tasks (type, priority, state, lease_expires_at, lock_token)"
        " SELECT 'ok', 1, 'running', now(), %s FROM generate_series(1, 100) RETURNING id",
        (token,),
    )
    ids = [row[0] for row in sql.fetchall()]
    query, params = QUERIES["extend_leases"], inline_params((ids, [token], 30.0))
    sql.execute("BEGIN")
    sql.execute("EXPLAIN (ANALYZE, BUFFERS) " + query.inline, params)
    plan = [row[0] for row in sql.fetchall()]
    sql.execute("ROLLBACK")
    scan = next(i for i, line in enumerate(plan) if "Scan" in line)
    read = next(
        line for line in plan[scan:] if "Buffers:" in line
    )  # the rows' scan, not the update
    pages = sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", read))
    assert pages < 1000, "\n".join(plan)  # the finished rows alone fill over 2,000 pages


def _token(sql: Cursor, task_id: int) -> str:
    sql.execute("SELECT lock_token FROM tasks WHERE id = %s", (task_id,))
    row = sql.fetchone()
    assert row is not None
    return str(row[0])


async def test_exponential_backoff_applies_after_a_crash_too(database_url: str, conn, sql) -> None:
    config = make_config(database_url, retry_backoff="exponential", timeout_milliseconds=10_000)
    sql.execute("INSERT INTO tasks (type, priority, attempts) VALUES ('ok', 1, 2)")
    await _claim(conn)  # its third attempt: exponential says 40 s, jittered to 20-40 s
    dead = DeadWorker(f"{HOST}:1:high_1", "killed by SIGKILL", task_id=1)
    await recovery.release_leftovers(conn, config, HOST, ME, dead)
    sql.execute("SELECT extract(epoch FROM scheduled_at - now()) FROM tasks WHERE id = 1")
    row = sql.fetchone()
    assert row is not None and 19 < float(row[0]) <= 40


async def test_a_first_start_sweeps_only_dead_processes_of_its_host(
    conn, sql, config, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'ok', 1 FROM generate_series(1, 2)")
    await _claim(conn, limit=1, slot="high_1")
    await _claim(conn, limit=1, slot="high_2")
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)
    sql.execute("UPDATE tasks SET locked_by = 'elsewhere:1:high_2' WHERE id = 2")
    await recovery.release_leftovers(conn, config, HOST, ME, None)
    assert _state(sql, 1)[:2] == ("retrying", 1)
    assert "found at start of another" in _state(sql, 1)[2]
    assert _state(sql, 2)[0] == "running"  # another host's: left to its lease
