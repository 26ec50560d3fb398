"""Cancelling a running task: 202, a coroutine stopped, a plain function's outcome dropped."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
from typing import Any

import psycopg2.extensions
import pytest
from aiohttp.test_utils import TestClient

from asynctask.core.models import CANCELLABLE_STATES, Priority
from asynctask.core.sql import QUERIES, inline_params
from asynctask.service.app import create_app
from asynctask.workers import cancels as cancels_module
from asynctask.workers import prefetch, registry
from asynctask.workers.attempt import AttemptRunner
from asynctask.workers.cancels import CancelBoard, CancelRouter
from asynctask.workers.link import SlotLink
from asynctask.workers.slots import Slot
from asynctask.workers.wakeup import CANCEL, NUDGE, Wakeup
from asynctask.workers.worker import Worker
from tests import procs
from tests.conftest import make_config
from tests.test_worker import fetch, insert, running, states_are, task_row
from tests.waiting import wait_until, wait_until_async

Cursor = psycopg2.extensions.cursor


def cancel(sql: Cursor, task_id: int) -> str | None:
    """Run the API's cancel statement; the state the task was in (None: not cancellable)."""
    states = [state.value for state in CANCELLABLE_STATES]
    sql.execute(QUERIES["cancel_task"].inline, inline_params((task_id, states)))
    row = sql.fetchone()
    assert sql.description is not None
    names = [column.name for column in sql.description]
    return None if row is None else str(row[names.index("was")])


def latency_ms(sql: Cursor, task_id: int) -> float:
    """From the cancel's commit (finished_at) to the handler's CancelledError (its record)."""
    sql.execute(
        "SELECT extract(epoch FROM c.at - t.finished_at) * 1000 FROM cancels c"
        " JOIN tasks t ON t.id = c.task_id WHERE c.task_id = %s",
        (task_id,),
    )
    return float(fetch(sql)[0])


def recorded(sql: Cursor, task_id: int) -> bool:
    sql.execute("SELECT count(*) FROM cancels WHERE task_id = %s", (task_id,))
    return bool(fetch(sql)[0])


async def test_a_running_coroutine_is_cancelled_and_answers_202(
    aiohttp_client: Any, database_url: str, sql: Cursor, cancels: Cursor
) -> None:
    config = make_config(database_url)
    client: TestClient = await aiohttp_client(create_app(config))
    task_id = insert(sql, "cancellable", {"seconds": 60})
    async with running(config):
        await wait_until_async(states_are(sql, [task_id], "running"))
        response = await client.post(f"/api/tasks/{task_id}/cancel")
        assert response.status == 202
        answer = await response.json()
        assert answer["state"] == "cancelled" and answer["finished_at"] is not None
        await wait_until_async(lambda: recorded(sql, task_id))
        after = insert(sql, "returns", {"value": 1})  # the worker goes on with its next task
        await wait_until_async(states_are(sql, [after], "completed"))
    row = task_row(sql, task_id)
    assert row["state"] == "cancelled" and row["attempts"] == 1 and row["locked_by"] is None
    print(f"cancel to CancelledError: {latency_ms(sql, task_id):.1f} ms")
    again = await client.post(f"/api/tasks/{task_id}/cancel")
    assert again.status == 409


async def test_a_plain_function_runs_on_but_its_outcome_is_discarded(
    database_url: str, sql: Cursor
) -> None:
    config = make_config(database_url)
    task_id = insert(sql, "blocking", {"seconds": 1.5})
    async with running(config) as (worker, _):
        await wait_until_async(states_are(sql, [task_id], "running"))
        assert cancel(sql, task_id) == "running"
        assert task_row(sql, task_id)["state"] == "cancelled"  # at once, in the database
        await wait_until_async(lambda: worker.cancels.current is None)  # it ran to its end
        after = insert(sql, "returns", {"value": 1})
        await wait_until_async(states_are(sql, [after], "completed"))
    sql.execute("SELECT state, result, last_error FROM tasks WHERE id = %s", (task_id,))
    assert fetch(sql) == ("cancelled", None, None)  # its "finished" was never written


async def test_a_scheduled_task_is_cancelled_like_an_available_one(
    aiohttp_client: Any, database_url: str, sql: Cursor
) -> None:
    client: TestClient = await aiohttp_client(create_app(make_config(database_url)))
    task_id = insert(sql, "returns")
    sql.execute(
        "UPDATE tasks SET scheduled_at = now() + interval '1 hour' WHERE id = %s", (task_id,)
    )
    response = await client.post(f"/api/tasks/{task_id}/cancel")
    assert response.status == 200 and (await response.json())["state"] == "cancelled"


async def test_a_task_cancelled_in_its_claim_never_starts(
    database_url: str, sql: Cursor, cancels: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch, "next_limit", lambda *args: 4)  # one claim takes all four
    config = make_config(database_url)
    async with running(config) as (worker, _):
        await wait_until_async(lambda: worker.limit == 4)
        sql.execute(
            "INSERT INTO tasks (type, priority, data) SELECT 'cancellable', 1, '{\"seconds\": 0.3}'"
            " FROM generate_series(1, 4)"
        )
        sql.execute("SELECT id FROM tasks ORDER BY id")
        ids = [row[0] for row in sql.fetchall()]
        await wait_until_async(lambda: worker.cancels.current is not None)
        assert cancel(sql, ids[3]) == "running"  # claimed with the others, not started
        await wait_until_async(states_are(sql, ids[:3], "completed"))
    assert task_row(sql, ids[3])["state"] == "cancelled"
    assert not recorded(sql, ids[3])  # its handler never ran


async def test_a_missed_notification_is_found_by_the_workers_own_check(
    database_url: str, sql: Cursor, cancels: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancels_module, "CHECK_SECONDS", 0.2)
    config = make_config(database_url)
    # A follower (high_2) alone: it LISTENs to nothing and has no leader to pass cancels on.
    link = SlotLink(multiprocessing.get_context("spawn"), Slot("high_2", Priority.HIGH, 1))
    worker = Worker(config, link, registry.load_handlers(config))
    task_id = insert(sql, "cancellable", {"seconds": 60})
    runner = asyncio.create_task(worker.run())
    try:
        await wait_until_async(states_are(sql, [task_id], "running"))
        assert cancel(sql, task_id) == "running"
        await wait_until_async(lambda: recorded(sql, task_id))
    finally:
        worker.stop("test over")
        await asyncio.wait_for(runner, 15)


def test_a_leader_passes_cancels_to_the_sibling_that_runs_the_task(
    database_url: str, sql: Cursor, cancels: Cursor
) -> None:
    config = make_config(database_url, priority_queues={"high": 3, "normal": 0, "low": 0})
    ids = [insert(sql, "cancellable", {"seconds": 60}) for _ in range(3)]
    with procs.supervisor(config, sql):
        wait_until(lambda: procs.count(sql, "state = 'running'") == 3)
        sql.execute("SELECT id, locked_by FROM tasks ORDER BY id")
        holders = dict(sql.fetchall())
        assert len({h.rsplit(":", 1)[1] for h in holders.values()}) == 3  # one per worker
        for task_id in ids:
            assert cancel(sql, task_id) == "running"
        wait_until(lambda: all(recorded(sql, task_id) for task_id in ids))
        for task_id in ids:
            print(f"{holders[task_id]}: cancel to CancelledError {latency_ms(sql, task_id):.1f} ms")


# --- the parts, alone ---------------------------------------------------------------------------


def test_the_pipe_carries_cancels_and_nudges_apart() -> None:
    seen: list[int] = []
    event = asyncio.Event()
    wakeup = Wakeup(event, cancelled=seen.append)
    big = 2**40 + 2  # its bytes hold a CANCEL byte too
    message = bytes([CANCEL]) + big.to_bytes(8, "big")
    assert wakeup._cancels(message + NUDGE + message[:4]) == NUDGE
    assert seen == [big] and wakeup._partial == message[:4]
    assert wakeup._cancels(wakeup._partial + message[4:] + message) == b""
    assert seen == [big, big, big] and wakeup._partial == b""


def test_a_leader_routes_each_cancel_by_its_holder() -> None:
    board = CancelBoard(AttemptRunner(1.0, "t"))
    sent: list[tuple[int, int]] = []
    host = socket.gethostname()
    router = CancelRouter(
        board, f"{host}:10:high_1", Slot("high_1", Priority.HIGH), lambda *a: sent.append(a)
    )
    router.notified(f"7 {host}:10:high_1")  # its own
    router.notified(f"8 {host}:11:high_3")  # its sibling high_3: pipe index 2
    router.notified(f"9 {host}:12:normal_2")  # another pool's
    router.notified("10 elsewhere:11:high_3")  # another host's
    router.notified(f"11 {host}:13:high_1")  # another supervisor's leader
    router.notified("garbage")
    assert board.requested(7) and not board.requested(8)
    assert sent == [(2, 8)]
