"""The dashboard's JSON routes on a real PostgreSQL: bulk actions, the event stream, overview."""

from __future__ import annotations

import asyncio
import json
import logging
import select
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.core import stats
from asynctask.core.config import Config
from asynctask.service import keys
from asynctask.service.app import create_app
from tests.outage import database_down
from tests.test_metrics import insert
from tests.waiting import wait_until_async

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
STREAM = {"Accept": "text/event-stream"}


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


def states(sql: Cursor) -> dict[tuple[int, str, str], int]:
    sql.execute("SELECT priority, state, type, count(*) FROM tasks GROUP BY 1, 2, 3")
    return {(p, s, t): n for p, s, t, n in sql.fetchall()}


async def bulk(client: Client, action: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/tasks/bulk/{action}", json=body)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def test_bulk_retry_previews_then_retries_only_what_matches(
    client: Client, sql: Cursor
) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, state, attempts, finished_at) VALUES"
        " ('ok', 1, 'failed', 5, now()), ('ok', 1, 'failed', 5, now()),"
        " ('boom', 3, 'failed', 5, now()), ('boom', 3, 'cancelled', 1, now()),"
        " ('ok', 1, 'completed', 1, now()), ('ok', 1, 'available', 0, NULL)"
    )
    listener = psycopg2.connect(sql.connection.dsn)
    listener.autocommit = True
    listener.cursor().execute("LISTEN tasks_low; LISTEN tasks_high")
    preview = await bulk(client, "retry", dry_run=True)
    assert preview == {
        "action": "retry",
        "dry_run": True,
        "states": ["failed", "cancelled"],
        "count": 4,
    }
    assert (await bulk(client, "retry", dry_run=True, priority="low"))["count"] == 2
    assert (await bulk(client, "retry", dry_run=True, state="failed", type="ok"))["count"] == 2
    assert states(sql)[(1, "failed", "ok")] == 2  # a preview changes nothing
    done = await bulk(client, "retry", dry_run=False, type="boom")
    assert done == {
        "action": "retry",
        "dry_run": False,
        "states": ["failed", "cancelled"],
        "count": 2,
    }
    assert states(sql) == {
        (1, "failed", "ok"): 2, (3, "available", "boom"): 2,
        (1, "completed", "ok"): 1, (1, "available", "ok"): 1,
    }  # fmt: skip
    sql.execute("SELECT DISTINCT attempts FROM tasks WHERE type = 'boom'")
    assert sql.fetchall() == [(0,)]
    select.select([listener], [], [], 1)
    listener.poll()
    assert [(n.channel, n.payload) for n in listener.notifies] == [("tasks_low", "")]
    listener.close()


async def test_bulk_cancel_takes_only_available_and_retrying(client: Client, sql: Cursor) -> None:
    for state in ("available", "retrying", "running", "completed"):
        insert(sql, 2, state, 3)
    insert(sql, 1, "available", 2)
    assert (await bulk(client, "cancel", dry_run=True, priority="normal"))["count"] == 6
    done = await bulk(client, "cancel", dry_run=False, priority="normal")
    assert done["count"] == 6 and done["states"] == ["available", "retrying"]
    assert states(sql) == {
        (2, "cancelled", "ok"): 6, (2, "running", "ok"): 3, (2, "completed", "ok"): 3,
        (1, "available", "ok"): 2,
    }  # fmt: skip
    assert (await bulk(client, "cancel", dry_run=True))["count"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "dry_run"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"dry_run": 1}, "dry_run"),
        ({"dry_run": True, "state": "completed"}, "state"),
        ({"dry_run": True, "state": "running"}, "state"),
        ({"dry_run": True, "priority": "urgent"}, "priority"),
        ({"dry_run": True, "type": "no spaces"}, "type"),
        ({"dry_run": True, "limit": 5}, "limit"),
        ([], "_schema"),
    ],
)
async def test_bulk_refuses_what_it_cannot_do_naming_the_field(
    client: Client, body: Any, field: str
) -> None:
    response = await client.post("/api/tasks/bulk/cancel", json=body)
    assert response.status == 422
    assert field in (await response.json())["fields"]


async def test_bulk_retry_refuses_a_state_it_cannot_retry(client: Client) -> None:
    response = await client.post(
        "/api/tasks/bulk/retry", json={"dry_run": True, "state": "available"}
    )
    assert response.status == 422 and "state" in (await response.json())["fields"]
    garbled = await client.post(
        "/api/tasks/bulk/retry", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert garbled.status == 400


async def read_events(response: Any, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The next `n` events of a stream, as (event, data)."""
    found: list[tuple[str, dict[str, Any]]] = []
    name = ""
    while len(found) < n:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            found.append((name, json.loads(line[6:])))
    return found


async def test_one_refresh_per_interval_feeds_every_stream(
    aiohttp_client: MakeClient, config: Config, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(config)
    app[keys.STATS].ttl = app[keys.EVENTS].interval = 0.2
    reads = []
    real = stats.read_snapshot

    async def counted(conn: Any) -> stats.Snapshot:
        reads.append(1)
        return await real(conn)

    monkeypatch.setattr(stats, "read_snapshot", counted)
    client = await aiohttp_client(app)
    streams = [await client.get("/api/events", headers=STREAM) for _ in range(5)]
    for response in streams:
        assert response.status == 200 and response.content_type == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
    first = [await read_events(response, 1) for response in streams]
    insert(sql, 1, "available", 7)
    later = [await read_events(response, 3) for response in streams]
    assert all(events[0][0] == "stats" for events in first)
    assert all(events[-1][1]["counts"]["high"]["available"] == 7 for events in later)
    # Five viewers, four or so refreshes each seen: one query per refresh, not per viewer.
    assert app[keys.EVENTS].listeners == 5
    assert len(reads) <= app[keys.EVENTS].refreshes + 1 < 5 * 4
    for response in streams:
        response.close()
    await app[keys.EVENTS].close()


async def test_a_client_without_event_stream_accept_gets_one_event(client: Client) -> None:
    response = await client.get("/api/events")
    assert response.status == 200 and response.content_type == "text/event-stream"
    text = await response.text()
    assert text.startswith("event: stats\ndata: {") and text.endswith("}\n\n")


async def test_the_stream_says_when_the_database_is_away(
    client: Client, database_url: str, sql: Cursor
) -> None:
    with database_down(database_url):
        response = await client.get("/api/events", headers=STREAM)
        ((name, data),) = await read_events(response, 1)
    assert name == "unavailable" and "unavailable" in data["error"]
    response.close()


async def test_the_overview_shows_pauses_workers_and_types(client: Client, sql: Cursor) -> None:
    await client.post("/api/queues/low/pause")
    insert(sql, 2, "available", 2)
    sql.execute(
        "INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status,"
        " heartbeat_at) VALUES ('a', 1, 'high_1', 1, 11, 'a:11:high_1', 'busy', now()),"
        " ('a', 1, 'high_2', 1, 12, 'a:12:high_2', 'idle', now()),"
        " ('b', 2, 'high_1', 1, 21, 'b:21:high_1', 'busy', now() - interval '1 minute')"
    )
    body = await (await client.get("/api/stats")).json()
    assert body["paused"]["low"]["paused"] is True and body["paused"]["high"]["paused"] is False
    assert body["supervisors"] == {"alive": 1, "dead": 1, "slots": 2, "busy": 1}
    assert body["types"] == ["ok"]
    assert body["per_minute"][-1]["created"] == 2 and body["last_hour"]["created"] == 2
    metrics = await (await client.get("/metrics")).text()
    assert 'asynctask_queue_paused{priority="low"} 1.0' in metrics
    assert 'asynctask_queue_paused{priority="high"} 0.0' in metrics


async def test_a_viewer_that_leaves_ends_its_stream_quietly(
    aiohttp_client: MakeClient, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(config)
    app[keys.STATS].ttl = app[keys.EVENTS].interval = 0.1
    client = await aiohttp_client(app)
    response = await client.get("/api/events", headers=STREAM)
    await read_events(response, 1)
    assert app[keys.EVENTS].listeners == 1
    response.close()
    await wait_until_async(lambda: app[keys.EVENTS].listeners == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
