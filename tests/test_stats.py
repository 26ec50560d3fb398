"""GET /api/stats on a real PostgreSQL, and the statistics cache on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.core import heartbeats, stats
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.models import PRIORITIES, STATES
from asynctask.core.stats import CachedStats, Snapshot
from asynctask.service.app import create_app
from tests.conftest import make_config
from tests.outage import database_down
from tests.test_metrics import insert

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
EMPTY = Snapshot(
    counts={p: dict.fromkeys(STATES, 0) for p in ("high", "normal", "low")},
    queue_lag_seconds={"high": 0.0, "normal": 0.0, "low": 0.0},
    last_minute={"completed": 0, "failed": 0},
)


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


async def test_stats_counts_lag_and_last_minute(client: Client, sql: Cursor) -> None:
    insert(sql, 1, "available", 2, scheduled_at="now() - interval '30 seconds'")
    insert(sql, 2, "running", 1)
    insert(sql, 2, "completed", 4, finished_at="now() - interval '10 seconds'")
    insert(sql, 3, "completed", 3, finished_at="now() - interval '10 minutes'")  # too old
    insert(sql, 3, "failed", 2, finished_at="now()")
    insert(sql, 1, "cancelled", 1, finished_at="now()")  # not an outcome counted per minute
    response = await client.get("/api/stats")
    assert response.status == 200 and response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {
        "counts", "queue_lag_seconds", "last_minute", "workers", "due_without_workers",
        "per_minute", "last_hour", "paused", "supervisors", "types", "generated_at",
    }  # fmt: skip
    assert body["counts"]["high"] == {**dict.fromkeys(STATES, 0), "available": 2, "cancelled": 1}
    assert body["counts"]["normal"] == {**dict.fromkeys(STATES, 0), "running": 1, "completed": 4}
    assert body["counts"]["low"] == {**dict.fromkeys(STATES, 0), "completed": 3, "failed": 2}
    assert 30 <= body["queue_lag_seconds"]["high"] < 60
    assert body["queue_lag_seconds"]["normal"] == body["queue_lag_seconds"]["low"] == 0
    assert body["last_minute"] == {"completed": 4, "failed": 2}
    assert body["workers"] == {"high": 0, "normal": 0, "low": 0}
    assert body["due_without_workers"] == ["high"]  # normal's only task is running, not due


def beating_workers(sql: Cursor, *slots: str, seconds_ago: float = 0.0) -> None:
    """Registry rows of workers (workers/beat.py) whose last heartbeat was `seconds_ago`."""
    for n, slot in enumerate(slots, 1):
        priority = list(PRIORITIES).index(slot.split("_")[0]) + 1
        sql.execute(
            "INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status,"
            " heartbeat_at) VALUES ('elsewhere', 1, %s, %s, %s, %s, 'idle',"
            " now() - %s * interval '1 second')",
            (slot, priority, n, f"elsewhere:{n}:{slot}", seconds_ago),
        )


async def test_stats_flag_due_tasks_of_a_priority_without_a_live_worker(
    aiohttp_client: MakeClient, database_url: str, sql: Cursor
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url)))
    insert(sql, 1, "available", 1)  # due
    insert(sql, 2, "retrying", 1)  # due
    insert(sql, 3, "available", 1, scheduled_at="now() + interval '1 hour'")  # not due yet
    beating_workers(sql, "high_1", "high_2", "low_1")
    body = await (await client.get("/api/stats")).json()
    assert body["workers"] == {"high": 2, "normal": 0, "low": 1}
    assert body["due_without_workers"] == ["normal"]
    metrics = await (await client.get("/metrics")).text()
    assert 'asynctask_workers{priority="high"} 2.0' in metrics
    assert 'asynctask_workers{priority="normal"} 0.0' in metrics


async def test_workers_whose_heartbeat_stopped_do_not_count(config: Config, sql: Cursor) -> None:
    # A killed host's rows stay until they are dropped; only a recent beat makes a worker live.
    beating_workers(sql, "normal_1", seconds_ago=heartbeats.DEAD_AFTER_SECONDS + 1)
    beating_workers(sql, "low_1")
    conn = await connect(str(config.database.url))
    try:
        live = await heartbeats.live_workers(conn, heartbeats.DEAD_AFTER_SECONDS)
        assert live == {"high": 0, "normal": 0, "low": 1}
    finally:
        conn.close()


async def test_stats_of_an_empty_table(client: Client) -> None:
    body = await (await client.get("/api/stats")).json()
    empty = EMPTY.as_json()
    for key in ("counts", "queue_lag_seconds", "last_minute"):
        assert body[key] == empty[key]
    assert body["types"] == [] and body["last_hour"] == dict.fromkeys(
        ("created", "completed", "failed", "retrying"), 0
    )
    assert len(body["per_minute"]) == 15 and not any(m["created"] for m in body["per_minute"])
    assert body["supervisors"] == {"alive": 0, "dead": 0, "slots": 0, "busy": 0}
    assert body["workers"] == {"high": 0, "normal": 0, "low": 0}
    assert {p: q["paused"] for p, q in body["paused"].items()} == dict.fromkeys(
        ("high", "normal", "low"), False
    )


async def test_stats_is_503_when_the_database_is_gone(
    client: Client, sql: Cursor, database_url: str
) -> None:
    with database_down(database_url):
        response = await client.get("/api/stats")
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert "unavailable" in (await response.json())["error"]


async def test_stats_needs_a_token_when_tokens_are_set(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, api__tokens=["s3cret"])))
    missing = await client.get("/api/stats")
    assert missing.status == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "error" in await missing.json()
    wrong = await client.get("/api/stats", headers={"Authorization": "Bearer s3cre"})
    assert wrong.status == 401
    right = await client.get("/api/stats", headers={"Authorization": "Bearer s3cret"})
    assert right.status == 200


# --- the cache alone ------------------------------------------------------------------------------


class Source:
    """A fake fetch: counts its calls, answers after `delay`, or raises `error`."""

    def __init__(self) -> None:
        self.calls = 0
        self.delay = 0.0
        self.error: Exception | None = None

    async def __call__(self) -> Snapshot:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return EMPTY


async def test_concurrent_callers_share_one_query() -> None:
    source = Source()
    source.delay = 0.05
    cache = CachedStats(source, ttl=10)
    answers = await asyncio.gather(*(cache.get() for _ in range(20)))
    assert source.calls == 1 and all(answer is EMPTY for answer in answers)


async def test_a_failure_is_cached_for_the_window_too() -> None:
    now = [0.0]
    source = Source()
    source.error = DatabaseUnavailable("database is unavailable: refused")
    cache = CachedStats(source, ttl=2, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(DatabaseUnavailable, match="refused"):
            await cache.get()
    assert source.calls == 1 and cache.latest is None
    source.error = None
    now[0] = 2.0
    assert await cache.get() is EMPTY and cache.latest is EMPTY and source.calls == 2


async def test_a_slow_query_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "STATS_TIMEOUT_SECONDS", 0.05)
    source = Source()
    source.delay = 5
    with pytest.raises(DatabaseUnavailable, match=r"took over 0\.05 s"):
        await asyncio.wait_for(CachedStats(source).get(), 2)
