"""Pausing and resuming a priority: the API, the CLI, and real workers that stop within a second."""

from __future__ import annotations

import select
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.cli.main import main
from asynctask.core.config import Config
from asynctask.core.heartbeats import HEARTBEAT_SECONDS
from asynctask.core.sql import QUERIES, inline_params
from asynctask.service.app import create_app
from asynctask.workers.pause import PauseState
from tests.conftest import TEST_HANDLERS, make_config
from tests.procs import count, insert_many, stop, supervisor
from tests.test_worker import fetch
from tests.waiting import wait_until

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor


def set_paused(sql: Cursor, priority: int, paused: bool) -> datetime:
    """Pause or resume as the API does (same statement); when it happened (database clock)."""
    sql.execute(QUERIES["set_paused"].inline, inline_params((priority, paused)))
    return fetch(sql)[2]  # type: ignore[no-any-return]


def statuses(sql: Cursor) -> set[str]:
    sql.execute("SELECT DISTINCT status FROM workers")
    return {row[0] for row in sql.fetchall()}


def last_start(sql: Cursor) -> datetime:
    sql.execute("SELECT max(started_at) FROM tasks")
    return fetch(sql)[0]  # type: ignore[no-any-return]


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


async def test_pause_and_resume_through_the_api(client: Client, sql: Cursor) -> None:
    listener = psycopg2.connect(sql.connection.dsn)
    listener.autocommit = True
    listener.cursor().execute("LISTEN asynctask_queues")
    before = await (await client.get("/api/queues")).json()
    assert before == {
        "queues": [
            {"priority": p, "paused": False, "since": None} for p in ("high", "normal", "low")
        ]
    }
    paused = await client.post("/api/queues/high/pause")
    assert paused.status == 200
    body = await paused.json()
    assert body["priority"] == "high" and body["paused"] is True and body["since"]
    again = await (await client.post("/api/queues/high/pause")).json()
    assert again == body  # pausing twice changes nothing, not even `since`
    queues = (await (await client.get("/api/queues")).json())["queues"]
    assert [q["paused"] for q in queues] == [True, False, False]
    resumed = await (await client.post("/api/queues/high/resume")).json()
    assert resumed["paused"] is False and resumed["since"] > body["since"]
    sql.execute("SELECT paused, version FROM queues WHERE priority = 1")
    assert fetch(sql) == (False, 2)  # persisted; one version per change
    select.select([listener], [], [], 1)
    listener.poll()
    assert {(n.channel, n.payload) for n in listener.notifies} == {("asynctask_queues", "high")}
    listener.close()
    missing = await client.post("/api/queues/urgent/pause")
    assert missing.status == 404 and "error" in await missing.json()


def test_pause_and_resume_from_the_command_line(
    tmp_path: Path, database_url: str, sql: Cursor, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"database": {"url": database_url}, "handlers": TEST_HANDLERS})
    )
    assert main(["--config", str(config), "pause", "low"]) == 0
    assert capsys.readouterr().out.startswith("low: paused since 20")
    sql.execute("SELECT paused FROM queues WHERE priority = 3")
    assert fetch(sql) == (True,)
    assert main(["--config", str(config), "resume", "low"]) == 0
    assert capsys.readouterr().out.startswith("low: running since 20")
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), "pause", "urgent"])
    assert exited.value.code == 2
    assert "invalid choice: 'urgent'" in capsys.readouterr().err


def test_a_newer_state_is_never_undone_by_an_older_read() -> None:
    state = PauseState("high")  # type: ignore[arg-type]
    assert state.stale and not state.paused
    state.apply(True, 3)  # a notification's re-read
    state.apply(False, 2)  # a heartbeat that read before the pause committed
    assert state.paused and state.version == 3
    state.stale = False
    assert state.heard("high") and state.heard("") and not state.heard("low")
    state.changed()
    assert state.stale


def test_workers_stop_claiming_within_a_second_and_resume_at_once(
    database_url: str, sql: Cursor
) -> None:
    config = make_config(database_url, priority_queues={"high": 2, "normal": 0, "low": 0})
    insert_many(sql, 3000, "sleepy", '{"seconds": 0.01}')
    with supervisor(config, sql) as process:
        wait_until(lambda: count(sql, "state = 'completed'") >= 50)
        paused_at = set_paused(sql, 1, True)
        time.sleep(1.5)
        stopped = last_start(sql) - paused_at
        done = count(sql, "state = 'completed'")
        time.sleep(1.0)
        assert count(sql, "state = 'completed'") == done  # nothing runs while paused
        assert count(sql, "state = 'running'") == 0  # claimed but unstarted: handed back
        wait_until(lambda: statuses(sql) == {"paused"}, timeout=HEARTBEAT_SECONDS + 3)
        resumed_at = set_paused(sql, 1, False)
        wait_until(lambda: last_start(sql) > resumed_at)
        restarted = last_start(sql) - resumed_at
        assert stop(process) == 0
    ms = timedelta(milliseconds=1)
    print(f"\npause: last claim {stopped / ms:.0f} ms after; resume: first {restarted / ms:.0f} ms")
    assert stopped < timedelta(seconds=1)
    assert restarted < timedelta(seconds=1)


def test_a_pause_survives_a_restart(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, priority_queues={"high": 1, "normal": 1, "low": 0})
    set_paused(sql, 1, True)
    insert_many(sql, 20, "ok", priority=1)
    insert_many(sql, 20, "ok", priority=2)
    with supervisor(config, sql) as process:
        wait_until(lambda: count(sql, "priority = 2 AND state = 'completed'") == 20)
        time.sleep(1.0)  # a poll or five
        assert count(sql, "priority = 1 AND state = 'available'") == 20

        def slots() -> list[tuple[str, str]]:
            sql.execute("SELECT slot, status FROM workers ORDER BY slot")
            return sql.fetchall()

        wait_until(lambda: slots() == [("high_1", "paused"), ("normal_1", "idle")], timeout=5)
        set_paused(sql, 1, False)
        wait_until(lambda: count(sql, "priority = 1 AND state = 'completed'") == 20, timeout=5)
        assert stop(process) == 0


def test_a_missed_notification_is_caught_by_the_heartbeat(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, priority_queues={"high": 1, "normal": 0, "low": 0})
    insert_many(sql, 2000, "sleepy", '{"seconds": 0.01}')
    with supervisor(config, sql) as process:
        wait_until(lambda: count(sql, "state = 'completed'") >= 20)
        # A pause written behind the API's back: no NOTIFY, only the table.
        sql.execute(
            "UPDATE queues SET paused = true, version = version + 1, changed_at = now()"
            " WHERE priority = 1 RETURNING changed_at"
        )
        paused_at = fetch(sql)[0]
        time.sleep(HEARTBEAT_SECONDS + 1.5)
        assert last_start(sql) - paused_at < timedelta(seconds=HEARTBEAT_SECONDS + 0.5)
        assert count(sql, "state = 'available'") > 0
        assert stop(process) == 0
