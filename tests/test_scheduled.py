"""Tasks for later: the API's fields, the derived `scheduled` state, and the leader's due timer.

The tight precision figures come from bench/scheduled.py. Here the workers poll once a minute,
so a task that starts within the test's patience was started by the timer, never by a poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.core import channels, task_rows
from asynctask.core import sql as catalogue
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.models import Priority
from asynctask.service.app import create_app
from asynctask.service.datetimes import NAIVE_DATETIME
from asynctask.service.rules import MAX_DELAY_SECONDS, NOT_BOTH
from asynctask.workers.due import DueTimer, parse_at
from asynctask.workers.wakeup import WakePipes, Wakeup
from tests.conftest import make_config
from tests.procs import supervisor
from tests.test_worker import fetch, running
from tests.waiting import wait_until, wait_until_async

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
MINUTE_POLL = 60_000  # timeout_milliseconds: no poll happens within a test


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _started(sql: Cursor, task_id: int) -> tuple[str, float | None]:
    """(state, seconds from scheduled_at to the claim that started it)."""
    sql.execute(
        "SELECT state, extract(epoch FROM started_at - scheduled_at)::float8 FROM tasks"
        " WHERE id = %s",
        (task_id,),
    )
    state, late = fetch(sql)
    return state, late


# --- the API -------------------------------------------------------------------------------------


async def test_a_task_for_later_is_scheduled_in_every_answer_until_its_time(
    client: Client, sql: Cursor
) -> None:
    at = _later(3600)
    created = await (
        await client.post("/api/tasks", json={"type": "ok", "scheduled_at": at})
    ).json()
    assert created["state"] == "scheduled"
    assert datetime.fromisoformat(created["scheduled_at"]) == datetime.fromisoformat(at)
    delayed = await (
        await client.post("/api/tasks", json={"type": "ok", "delay_seconds": 60})
    ).json()
    now = await (await client.post("/api/tasks", json={"type": "ok", "delay_seconds": 0})).json()
    assert (delayed["state"], now["state"]) == ("scheduled", "available")
    seconds = datetime.fromisoformat(delayed["scheduled_at"]) - datetime.fromisoformat(
        delayed["inserted_at"]
    )
    assert seconds == timedelta(seconds=60)  # from the server's clock, not the client's
    assert (await (await client.get(f"/api/tasks/{created['id']}")).json())["state"] == "scheduled"

    async def listed(state: str) -> list[int]:
        page = await (await client.get("/api/tasks", params={"state": state})).json()
        return [task["id"] for task in page["tasks"]]

    assert await listed("scheduled") == [delayed["id"], created["id"]]
    assert await listed("available") == [now["id"]]
    # Stored as available: nothing moves it when its time comes, the answers just say so.
    sql.execute(
        "UPDATE tasks SET scheduled_at = now() - interval '1 second' WHERE id = %s",
        (created["id"],),
    )
    assert (await (await client.get(f"/api/tasks/{created['id']}")).json())["state"] == "available"
    assert await listed("available") == [now["id"], created["id"]]


async def test_a_past_time_means_now(client: Client) -> None:
    task = await (
        await client.post("/api/tasks", json={"type": "ok", "scheduled_at": "2001-01-01T00:00:00Z"})
    ).json()
    assert task["state"] == "available" and task["scheduled_at"] == task["inserted_at"]


@pytest.mark.parametrize(
    ("at", "state"),
    [
        ("0211-04-28T16:26:11+18:48", "available"),  # an offset past PostgreSQL's 15:59
        ("0001-01-01t00:00:00+14:00", "available"),  # before year 1 in UTC; a lower-case t
        ("9999-12-31T23:59:59-05:00", "scheduled"),  # after 9999 in UTC: its last instant
    ],
)
async def test_any_rfc_3339_time_is_taken(client: Client, at: str, state: str) -> None:
    response = await client.post("/api/tasks", json={"type": "ok", "scheduled_at": at})
    assert response.status == 201 and (await response.json())["state"] == state
    again = await client.get(response.headers["Location"])
    assert again.status == 200


async def test_a_scheduled_task_can_be_cancelled(client: Client) -> None:
    task = await (await client.post("/api/tasks", json={"type": "ok", "delay_seconds": 30})).json()
    cancelled = await client.post(f"/api/tasks/{task['id']}/cancel")
    assert cancelled.status == 200 and (await cancelled.json())["state"] == "cancelled"


@pytest.mark.parametrize(
    ("item", "fields"),
    [
        ({"scheduled_at": "2030-01-01T09:00:00"}, {"scheduled_at": [NAIVE_DATETIME]}),
        ({"scheduled_at": "next tuesday"}, {"scheduled_at"}),
        ({"scheduled_at": 1893456000}, {"scheduled_at"}),
        ({"delay_seconds": -1}, {"delay_seconds"}),
        ({"delay_seconds": MAX_DELAY_SECONDS + 1}, {"delay_seconds"}),
        ({"delay_seconds": "60"}, {"delay_seconds"}),
        ({"delay_seconds": True}, {"delay_seconds"}),
        (
            {"delay_seconds": 5, "scheduled_at": _later(5)},
            {"scheduled_at": [NOT_BOTH], "delay_seconds": [NOT_BOTH]},
        ),
    ],
)
async def test_bad_times_are_refused_naming_the_field(
    client: Client, sql: Cursor, item: dict[str, Any], fields: Any
) -> None:
    single = await client.post("/api/tasks", json={"type": "ok", **item})
    assert single.status == 422
    named = (await single.json())["fields"]
    assert (named if isinstance(fields, dict) else set(named)) == fields
    batch = await client.post(
        "/api/tasks/batch", json={"tasks": [{"type": "ok"}, {"type": "ok", **item}]}
    )
    assert batch.status == 422
    assert set((await batch.json())["fields"]) == {f"tasks.1.{name}" for name in fields}
    sql.execute("SELECT count(*) FROM tasks")
    assert fetch(sql) == (0,)


async def test_later_tasks_notify_their_due_time(database_url: str) -> None:
    conn, listener = await connect(database_url), await connect(database_url)
    try:
        await channels.listen(listener, Priority.HIGH)
        (later,) = await task_rows.insert_task_rows(
            conn, [task_rows.NewRow("ok", 1, 5, "{}", None, 30.0)]
        )
        (now,) = await task_rows.insert_task_rows(conn, [task_rows.NewRow("ok", 1, 5, "{}")])
        at = _later(40)
        batch = [
            task_rows.NewRow("ok", 1, 5, "{}", *when)
            for when in ((at, None), (at, None), (None, 50.0), (None, None))
        ]
        ids = await task_rows.insert_tasks(conn, batch)
        await asyncio.sleep(0.2)
        payloads = []
        while not listener.notifies.empty():
            payloads.append(listener.notifies.get_nowait().payload)
    finally:
        conn.close()
        listener.close()
    epoch = later["scheduled_at"].timestamp()
    assert payloads[:2] == [f"at {epoch:.6f} {later['id']}", str(now["id"])]
    assert parse_at(payloads[0]) == (pytest.approx(epoch, abs=1e-6), False)
    # A batch: the task due now by its id; the earliest later ones by their time, "*": several.
    assert len(payloads) == 4 and str(ids[3]) in payloads[2:]
    (batched,) = [parse_at(p) for p in payloads[2:] if p != str(ids[3])]
    assert batched == (pytest.approx(datetime.fromisoformat(at).timestamp(), abs=1e-6), True)


async def test_stats_count_scheduled_tasks_apart_from_available(
    client: Client, sql: Cursor
) -> None:
    await client.post("/api/tasks/batch", json={"tasks": [{"type": "ok", "delay_seconds": 60}] * 3})
    await client.post("/api/tasks", json={"type": "ok", "priority": "high"})
    sql.execute(
        "INSERT INTO tasks (type, state, scheduled_at)"
        " VALUES ('ok', 'retrying', now() + interval '1 hour')"
    )
    counts = (await (await client.get("/api/stats")).json())["counts"]
    assert counts["normal"]["scheduled"] == 3 and counts["normal"]["available"] == 0
    assert counts["normal"]["retrying"] == 1  # waiting for its backoff: still retrying
    assert counts["high"]["available"] == 1 and counts["high"]["scheduled"] == 0


def test_the_timer_and_the_scheduled_count_read_the_due_index(sql: Cursor) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, scheduled_at) SELECT 'ok', 2 + i % 2,"
        " now() + i * interval '1 second' FROM generate_series(-10000, 10000) AS i"
    )
    sql.execute("ANALYZE tasks")
    for name, params in (("next_due", (2, 0.5)), ("scheduled_counts", ([1, 2, 3],))):
        query = catalogue.QUERIES[name]
        sql.execute("EXPLAIN " + query.inline, catalogue.inline_params(params))
        plan = "\n".join(row[0] for row in sql.fetchall())
        assert "tasks_due_idx" in plan and "Seq Scan on tasks" not in plan, plan


# --- the timer alone ------------------------------------------------------------------------------


async def test_the_timer_fires_at_the_earliest_time_it_was_told() -> None:
    fired: list[float] = []
    timer = DueTimer(lambda: fired.append(time.monotonic()))
    started = time.monotonic()
    timer.set(0.3, server_clock=time.time())
    timer.at_epoch(time.time() + 0.1)  # a create for sooner moves it earlier
    timer.at_epoch(time.time() + 0.2)  # one for later does not
    await wait_until_async(lambda: fired)
    assert 0.1 <= fired[0] - started < 0.3
    await asyncio.sleep(0.3)
    assert len(fired) == 1  # once: the worker reads the next time when it goes idle
    timer.reading()
    timer.set(None)
    assert timer.deadline is None


async def test_a_task_notified_while_the_index_is_read_is_not_forgotten() -> None:
    timer = DueTimer(lambda: None)
    timer.reading()
    timer.at_epoch(time.time() + 5)  # arrives while next_due runs, about a task it did not see
    timer.set(60.0)
    assert timer.deadline is not None and timer.deadline < time.monotonic() + 6
    timer.reading()
    timer.set(60.0)  # a later reading knows that task, or knows it is gone
    assert timer.deadline > time.monotonic() + 50
    timer.cancel()


async def test_the_timer_never_fires_early_on_a_coarse_loop_clock() -> None:
    fired: list[float] = []
    now = [100.0]
    timer = DueTimer(lambda: fired.append(now[0]), clock=lambda: now[0])
    timer.set(0.01)
    await asyncio.sleep(0.05)  # the loop's timer ran; our clock says it is still early
    assert not fired
    now[0] += 0.01
    await wait_until_async(lambda: fired)


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [
        ("at 1893456000.25 17", (1893456000.25, False)),
        ("at 1893456000 *", (1893456000.0, True)),
        ("at 1893456000.25", None),
        ("at nan 1", None),
        ("at x 1", None),
        ("42", None),
        ("", None),
    ],
)
def test_parse_at(payload: str, parsed: tuple[float, bool] | None) -> None:
    assert parse_at(payload) == parsed


async def test_an_at_payload_sets_the_timer_and_wakes_nobody_now() -> None:
    leader = Wakeup(asyncio.Event(), WakePipes())
    leader.idle = True
    leader.notified(f"at {time.time() + 0.05} 7")
    assert not leader.event.is_set() and leader.timer.deadline is not None
    await wait_until_async(leader.event.is_set)
    leader.close()


# --- real workers ------------------------------------------------------------------------------


async def test_an_idle_leader_starts_a_task_at_its_time(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, timeout_milliseconds=MINUTE_POLL)
    async with running(config) as (worker, _):
        await wait_until_async(lambda: worker.wakeup.idle)
        conn = await connect(database_url)
        try:
            (task,) = await task_rows.insert_task_rows(
                conn, [task_rows.NewRow("ok", 1, 5, "{}", None, 0.3)]
            )
        finally:
            conn.close()
        assert task["state"] == "scheduled"
        await wait_until_async(lambda: _started(sql, task["id"])[0] == "completed")
    late = _started(sql, task["id"])[1]
    assert late is not None and 0 <= late < 5  # on time: never early, and no poll started it


async def test_a_task_inserted_for_later_by_plain_sql_is_timed_from_the_index(
    database_url: str, sql: Cursor
) -> None:
    config = make_config(database_url, timeout_milliseconds=MINUTE_POLL)
    sql.execute(
        "INSERT INTO tasks (type, priority, scheduled_at)"
        " VALUES ('ok', 1, now() + interval '1 second') RETURNING id"
    )
    (task_id,) = fetch(sql)
    async with running(config):  # its first idle moment reads the due index
        await wait_until_async(lambda: _started(sql, task_id)[0] == "completed")
    late = _started(sql, task_id)[1]
    assert late is not None and 0 <= late < 5


def test_tasks_due_together_start_together_and_a_busy_leader_hands_on(
    database_url: str, sql: Cursor, executions: Cursor
) -> None:
    config = make_config(
        database_url, timeout_milliseconds=MINUTE_POLL, priority_queues={"high": 3}
    )
    with supervisor(config, sql):
        # Two tasks due at the same instant: the leader wakes a sibling for the second.
        sql.execute(
            "SELECT asynctask_enqueue('record', '{\"seconds\": 2}', 'high',"
            " now() + interval '0.5 second') FROM generate_series(1, 2)"
        )
        wait_until(lambda: _executions(sql) == 2, timeout=10)
        sql.execute("SELECT count(DISTINCT pid) FROM executions")
        assert fetch(sql) == (2,)
        wait_until(lambda: _count_state(sql, "completed") == 2)
        # The leader busy with a long task when another comes due: a sibling starts it.
        sql.execute("SELECT asynctask_enqueue('sleepy', '{\"seconds\": 30}', 'high')")
        wait_until(lambda: _count_state(sql, "running") == 1)
        sql.execute("SELECT asynctask_enqueue('ok', '{}', 'high', now() + interval '0.5 second')")
        wait_until(lambda: _count_state(sql, "completed") == 3, timeout=10)


def _executions(sql: Cursor) -> int:
    sql.execute("SELECT count(*) FROM executions")
    return int(fetch(sql)[0])


def _count_state(sql: Cursor, state: str) -> int:
    sql.execute("SELECT count(*) FROM tasks WHERE state = %s", (state,))
    return int(fetch(sql)[0])
