"""The worker loop, run in-process against a real PostgreSQL (the supervisor tests spawn it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg2.extensions
import pytest

from asynctask.core import claims
from asynctask.core.config import Config
from asynctask.core.lifecycle import Decision, Outcome
from asynctask.core.models import Priority, State
from asynctask.workers import registry
from asynctask.workers.acks import AckBuffer
from asynctask.workers.connection import QueryConnection
from asynctask.workers.link import DeadWorker, SlotLink
from asynctask.workers.recovery import dead_lockers, pid_alive, pid_of
from asynctask.workers.slots import EXIT_REPLACE_NOW, Slot
from asynctask.workers.worker import Worker
from tests.conftest import TEST_HANDLERS, make_config
from tests.waiting import wait_until_async

Cursor = psycopg2.extensions.cursor
HIGH = Slot("high_1", Priority.HIGH)


def fetch(sql: Cursor) -> tuple[Any, ...]:
    """The one row the last statement returned."""
    row = sql.fetchone()
    assert row is not None
    return row


def insert(sql: Cursor, type_: str, data: dict[str, Any] | None = None, **columns: Any) -> int:
    """Insert a task by plain SQL (no NOTIFY), as the original's load test does."""
    values = {"type": type_, "priority": 1, "data": json.dumps(data or {}), **columns}
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    sql.execute(f"INSERT INTO tasks ({names}) VALUES ({marks}) RETURNING id", list(values.values()))
    return int(fetch(sql)[0])


def task_row(sql: Cursor, task_id: int) -> dict[str, Any]:
    sql.execute(
        "SELECT state, attempts, last_error, locked_by FROM tasks WHERE id = %s", (task_id,)
    )
    state, attempts, last_error, locker = fetch(sql)
    return {"state": state, "attempts": attempts, "last_error": last_error, "locked_by": locker}


def states_are(sql: Cursor, ids: list[int], *states: str) -> Callable[[], bool]:
    return lambda: all(task_row(sql, i)["state"] in states for i in ids)


@contextlib.asynccontextmanager
async def running(
    config: Config, dead: DeadWorker | None = None
) -> AsyncIterator[tuple[Worker, asyncio.Task[int]]]:
    link = SlotLink(multiprocessing.get_context("spawn"), HIGH)
    link.spawning(dead)
    worker = Worker(config, link, registry.load_handlers(config))
    task = asyncio.create_task(worker.run())
    try:
        yield worker, task
    finally:
        worker.stop("test over")
        await asyncio.wait_for(task, 15)


async def test_polls_retries_and_fails(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, timeout_milliseconds=100)
    ids = {
        "ok": insert(sql, "ok"),
        "flaky": insert(sql, "flaky", {"succeed_on": 3}, max_attempts=5),
        "boom": insert(sql, "boom", max_attempts=2),
        "unknown": insert(sql, "nope", max_attempts=5),
        "low": insert(sql, "ok", priority=3),
    }
    async with running(config) as (worker, _):
        await wait_until_async(
            states_are(sql, [ids[k] for k in ids if k != "low"], "completed", "failed")
        )
        assert worker.link.silent_for() < 5
    rows = {name: task_row(sql, task_id) for name, task_id in ids.items()}
    assert rows["ok"]["state"] == "completed" and rows["ok"]["attempts"] == 1
    assert rows["flaky"]["state"] == "completed" and rows["flaky"]["attempts"] == 3
    assert "RuntimeError: flaky failure on attempt 2" in rows["flaky"]["last_error"]
    assert rows["boom"]["state"] == "failed" and rows["boom"]["attempts"] == 2
    assert rows["boom"]["last_error"].startswith("ValueError: boom\nTraceback")
    assert rows["unknown"]["state"] == "failed" and rows["unknown"]["attempts"] == 1
    assert "no handler is registered for type 'nope'" in rows["unknown"]["last_error"]
    assert rows["low"]["state"] == "available"  # another priority's queue
    assert rows["ok"]["locked_by"] is None


async def test_an_error_message_postgresql_cannot_store_fails_its_task_not_the_queue(
    database_url: str, sql: Cursor
) -> None:
    # Before: the finishing statement refused the message, the worker died writing it, and its
    # replacement ran the task again: a crash loop that stopped the queue.
    config = make_config(database_url, timeout_milliseconds=100)
    nul = insert(sql, "unstorable", {"kind": "nul"}, max_attempts=1)
    surrogate = insert(sql, "unstorable", {"kind": "surrogate"}, max_attempts=1)
    after = insert(sql, "ok")
    async with running(config) as (_, task):
        await wait_until_async(states_are(sql, [nul, surrogate, after], "completed", "failed"))
        assert not task.done()
    assert task_row(sql, nul)["last_error"].startswith("ValueError: bad\\x00byte\n")
    assert task_row(sql, surrogate)["last_error"].startswith("ValueError: bad \\udcff char\n")
    assert [task_row(sql, i)["state"] for i in (nul, surrogate, after)] == [
        "failed",
        "failed",
        "completed",
    ]


async def test_adaptive_prefetch_grows_and_resets(
    database_url: str, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits: list[int] = []
    original = claims.claim

    async def spy(conn: Any, **kwargs: Any) -> list[dict[str, Any]]:
        limits.append(kwargs["limit"])
        return await original(conn, **kwargs)

    monkeypatch.setattr(claims, "claim", spy)
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'ok', 1 FROM generate_series(1, 40)")
    async with running(make_config(database_url, prefetch=8)) as (worker, _):
        await wait_until_async(lambda: _count(sql, "completed") == 40)
        # 1 + 2 + 4 + 8 * 4 = 39: the next claim of 8 comes back short (1 row) and resets the size.
        # Read the size itself: the claim after that one may not come before the stop.
        assert worker.limit == 1
    assert limits[:5] == [1, 2, 4, 8, 8]


def _count(sql: Cursor, state: str) -> int:
    sql.execute("SELECT count(*) FROM tasks WHERE state = %s", (state,))
    return int(fetch(sql)[0])


async def test_a_stop_that_comes_during_the_flush_before_a_wait_is_not_lost(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen once in CI: SIGTERM's stop() set the wake-up while the worker wrote its outcomes; the
    # cycle then cleared it and slept until the next poll (a minute here) before stopping.
    config = make_config(database_url, timeout_milliseconds=60_000)
    link = SlotLink(multiprocessing.get_context("spawn"), HIGH)
    link.spawning(None)
    worker = Worker(config, link, registry.load_handlers(config))
    flush = worker.acks.flush

    async def flush_and_get_stopped() -> None:
        await flush()
        worker.stop("asked while the outcomes were being written")

    monkeypatch.setattr(worker.acks, "flush", flush_and_get_stopped)
    started = time.monotonic()
    await asyncio.wait_for(worker.run(), 30)
    assert time.monotonic() - started < 10  # not the minute's poll


@pytest.mark.parametrize("slow", ["sleepy", "hang"], ids=["coroutine", "plain_function"])
async def test_stop_finishes_the_running_task_and_releases_the_rest(
    database_url: str, sql: Cursor, slow: str
) -> None:
    config = make_config(database_url, prefetch=4)
    # A quick task first, so the smoothed duration stays small and the second claim takes two
    # (prefetch is capped by expected work: slow tasks alone would be claimed one at a time).
    # With plain functions the second claim's two rows go to the handler thread together, and
    # the thread stops before the second one (workers/plain.py).
    ids = [insert(sql, "ok")] + [insert(sql, slow, {"seconds": 0.3}) for _ in range(3)]
    async with running(config) as (worker, task):
        await wait_until_async(lambda: worker.limit == 4)  # the second claim took 2 tasks
        await wait_until_async(lambda: worker.link.doing == ids[1])
        worker.stop("test")
        assert await task == 0
    rows = [task_row(sql, i) for i in ids]
    assert [r["state"] for r in rows] == ["completed", "completed", "available", "available"]
    assert [r["attempts"] for r in rows] == [1, 1, 0, 0]


async def test_coroutine_timeout_and_shutdown_cut_off(database_url: str, sql: Cursor) -> None:
    handlers = {
        **TEST_HANDLERS,
        "sleepy": {"function": "tests.handlers:sleepy", "timeout_seconds": 0.3},
    }
    config = make_config(database_url, handlers=handlers, shutdown_timeout_seconds=0.3)
    timed_out = insert(sql, "sleepy", {"seconds": 30}, max_attempts=1)
    async with running(config) as (worker, task):
        await wait_until_async(states_are(sql, [timed_out], "failed"))
        assert not worker.stuck
    assert (
        "TimeoutError: attempt exceeded its timeout of 0.3 s"
        in task_row(sql, timed_out)["last_error"]
    )
    config = make_config(database_url, shutdown_timeout_seconds=0.3, timeout_milliseconds=50)
    cut = insert(sql, "sleepy", {"seconds": 30}, max_attempts=3)
    async with running(config) as (worker, task):
        await wait_until_async(lambda: worker.link.doing == cut)
        worker.stop("test")
        assert await asyncio.wait_for(task, 5) == 0
    row = task_row(sql, cut)
    assert row["state"] == "retrying"
    assert (
        "worker stopping: attempt cut off after shutdown_timeout_seconds = 0.3" in row["last_error"]
    )


async def test_stuck_sync_handler_asks_to_be_replaced(database_url: str, sql: Cursor) -> None:
    handlers = {
        **TEST_HANDLERS,
        "hang": {"function": "tests.handlers:hang", "timeout_seconds": 0.3},
    }
    config = make_config(database_url, handlers=handlers, prefetch=4)
    first = insert(sql, "ok")
    hung = insert(sql, "hang", {"seconds": 1.5}, max_attempts=3)
    later = [insert(sql, "ok") for _ in range(3)]
    async with running(config) as (_, task):
        assert await asyncio.wait_for(task, 10) == EXIT_REPLACE_NOW
    assert task_row(sql, first)["state"] == "completed"
    row = task_row(sql, hung)
    assert row["state"] == "retrying" and "attempt exceeded its timeout" in row["last_error"]
    assert all(task_row(sql, i)["state"] in ("available", "completed") for i in later)
    assert _count(sql, "running") == 0
    await asyncio.sleep(1.5)  # let the abandoned thread finish before the loop closes


async def test_supervisor_vanished(database_url: str) -> None:
    async with running(make_config(database_url)) as (worker, task):
        worker.supervisor_alive = lambda: False  # as if our supervisor were gone
        assert await asyncio.wait_for(task, 5) == 0
        assert worker.stopping


async def test_survives_losing_its_connection(database_url: str, sql: Cursor) -> None:
    # Polls fall on a grid from the worker's start (workers/ticks.py): none within this test.
    config = make_config(database_url, timeout_milliseconds=60_000)
    async with running(config) as (worker, _):
        await wait_until_async(worker.conn.listening.is_set)
        sql.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        # Reconnected at once (the loss wakes the worker), not at the next 5 s poll.
        await wait_until_async(
            lambda: worker.conn.connects == 2 and worker.conn.listening.is_set(), 4
        )
        started = time.monotonic()
        task_id = insert(sql, "ok")
        sql.execute("SELECT pg_notify('tasks_high', '')")
        await wait_until_async(states_are(sql, [task_id], "completed"))
        assert time.monotonic() - started < 4  # woken by NOTIFY, not the 60 s poll


async def test_releases_dead_predecessor_and_orphans(database_url: str, sql: Cursor) -> None:
    host = socket.gethostname()
    dead_locker = f"{host}:999999:high_1"
    running_id = insert(sql, "ok", state="running", attempts=1, locked_by=dead_locker)
    queued_id = insert(sql, "ok", state="running", attempts=1, locked_by=dead_locker)
    orphan_id = insert(
        sql, "ok", state="running", attempts=2, max_attempts=2, locked_by=f"{host}:999998:low_1"
    )
    alive_id = insert(
        sql, "ok", priority=3, state="running", attempts=1, locked_by=f"{host}:{os.getppid()}:low_2"
    )
    dead = DeadWorker(dead_locker, "killed by SIGKILL", task_id=running_id)
    async with running(make_config(database_url, timeout_milliseconds=50), dead):
        await wait_until_async(states_are(sql, [running_id, queued_id], "completed"))
    assert task_row(sql, running_id)["attempts"] == 2
    assert (
        "worker high_1 (pid 999999) died while running this task: killed by SIGKILL"
        in (task_row(sql, running_id)["last_error"])
    )
    assert task_row(sql, queued_id)["attempts"] == 1  # handed back uncounted, then run once
    assert task_row(sql, orphan_id)["state"] == "running"  # a replacement does not sweep
    async with running(make_config(database_url, timeout_milliseconds=50)):  # a first start does
        await wait_until_async(states_are(sql, [orphan_id], "failed"))
    orphan = task_row(sql, orphan_id)
    assert orphan["state"] == "failed" and f"{host}:999998:low_1" in orphan["last_error"]
    assert task_row(sql, alive_id)["state"] == "running"  # its process is alive: not ours


async def test_extends_its_lease_and_rescues_expired_ones(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, lease_seconds=1.2, timeout_milliseconds=50)
    expired = insert(sql, "ok", state="running", attempts=1, locked_by="elsewhere:1:high_1")
    sql.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (expired,)
    )
    long_one = insert(sql, "sleepy", {"seconds": 2.5})
    async with running(config):
        await wait_until_async(states_are(sql, [expired, long_one], "completed"))
    assert "lease expired: worker elsewhere:1:high_1" in task_row(sql, expired)["last_error"]
    assert task_row(sql, long_one)["attempts"] == 1  # its lease was kept alive throughout


async def test_ack_buffer_keeps_outcomes_while_the_database_is_away() -> None:
    conn = QueryConnection("postgresql://postgres@127.0.0.1:1/none", timeout=1)
    mirror = SlotLink(multiprocessing.get_context("spawn"), HIGH).unwritten
    acks = AckBuffer(conn, 0, mirror, flush_at=2)
    done = Decision(State.COMPLETED)
    await acks.record(Outcome(1, "00000000-0000-0000-0000-000000000001", done))
    assert not await acks.try_flush()
    await acks.record(Outcome(2, "00000000-0000-0000-0000-000000000002", done))
    assert len(acks.pending) == 2 and len(acks.held()[1]) == 2
    await acks.final_flush(tries=1)
    assert len(acks.pending) == 2


def test_pid_helpers() -> None:
    assert pid_of("host:123:high_1") == 123
    assert pid_of("garbage") is None
    assert pid_alive(os.getpid()) and not pid_alive(999_999_999)
    own = f"h:{os.getpid()}:high_1"
    lockers = [own, "h:999999999:low_1", f"h:{os.getppid()}:low_2", "bad"]
    assert dead_lockers(lockers, own) == [own, "h:999999999:low_1"]


async def test_unreachable_database_backs_off_and_still_stops() -> None:
    config = make_config("postgresql://postgres@127.0.0.1:1/none")
    async with running(config) as (worker, task):
        await asyncio.sleep(0.6)  # a few failed connection attempts, each followed by a backoff
        assert not worker._recovered
    assert task.result() == 0
