"""GET /metrics on a real PostgreSQL: task gauges, created counter, HTTP metrics, cache, DB down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from asynctask.core import counts, stats
from asynctask.core.config import Config
from asynctask.service import keys
from asynctask.service.app import create_app
from asynctask.service.metrics import UNMATCHED
from tests.conftest import make_config
from tests.outage import database_down

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
JSON = {"Content-Type": "application/json"}
Labels = tuple[tuple[str, str], ...]


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


async def scrape(client: Client) -> dict[str, dict[Labels, float]]:
    """Every sample of /metrics: {sample name: {sorted labels: value}}, parsed by prometheus."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


def insert(sql: Cursor, priority: int, state: str, n: int = 1, **columns: str) -> None:
    extra = "".join(f", {column}" for column in columns)
    values = "".join(f", {value}" for value in columns.values())
    sql.execute(
        f"INSERT INTO tasks (type, priority, state{extra})"
        f" SELECT 'ok', %s, %s{values} FROM generate_series(1, %s)",
        (priority, state, n),
    )


async def test_the_task_gauge_counts_rows_by_state_and_priority(
    client: Client, sql: Cursor
) -> None:
    insert(sql, 1, "available", 3)
    insert(sql, 1, "running", 2)
    insert(sql, 2, "completed", 5, finished_at="now()")
    insert(sql, 3, "failed", 1, finished_at="now()")
    insert(sql, 3, "cancelled", 4, finished_at="now()")
    insert(sql, 2, "retrying", 1, scheduled_at="now() + interval '1 hour'")  # stays retrying
    insert(sql, 2, "available", 2, scheduled_at="now() + interval '1 hour'")  # is scheduled
    tasks = (await scrape(client))["asynctask_tasks"]
    assert len(tasks) == 21  # every state x priority, zeros included
    assert tasks[labels(state="available", priority="high")] == 3
    assert tasks[labels(state="running", priority="high")] == 2
    assert tasks[labels(state="completed", priority="normal")] == 5
    assert tasks[labels(state="failed", priority="low")] == 1
    assert tasks[labels(state="cancelled", priority="low")] == 4
    assert tasks[labels(state="retrying", priority="normal")] == 1
    assert tasks[labels(state="available", priority="low")] == 0
    assert tasks[labels(state="scheduled", priority="normal")] == 2
    assert tasks[labels(state="available", priority="normal")] == 0
    assert sum(tasks.values()) == 18


async def test_queue_lag_is_the_age_of_the_oldest_due_task(client: Client, sql: Cursor) -> None:
    insert(sql, 1, "available", 1, scheduled_at="now() - interval '90 seconds'")
    insert(sql, 1, "available", 1, scheduled_at="now() - interval '5 seconds'")
    insert(sql, 2, "retrying", 1, scheduled_at="now() + interval '1 hour'")  # not due yet
    samples = await scrape(client)
    lag = samples["asynctask_queue_lag_seconds"]
    assert 90 <= lag[labels(priority="high")] < 120
    assert lag[labels(priority="normal")] == 0 and lag[labels(priority="low")] == 0
    assert samples["asynctask_database_up"] == {(): 1}


async def test_created_counts_single_and_batch_tasks_by_priority(client: Client) -> None:
    created = (await scrape(client))["asynctask_tasks_created_total"]
    assert created == {labels(priority=p): 0 for p in ("high", "normal", "low")}
    assert (await client.post("/api/tasks", json={"type": "ok", "priority": "high"})).status == 201
    assert (await client.post("/api/tasks", json={"type": "ok"})).status == 201
    batch = [{"type": "ok", "priority": "low"}] * 3 + [{"type": "ok", "priority": "high"}]
    assert (await client.post("/api/tasks/batch", json={"tasks": batch})).status == 201
    refused = await client.post("/api/tasks/batch", json={"tasks": [{"type": "nope"}]})
    assert refused.status == 422
    created = (await scrape(client))["asynctask_tasks_created_total"]
    assert created == {
        labels(priority="high"): 2,
        labels(priority="normal"): 1,
        labels(priority="low"): 3,
    }


async def test_http_metrics_label_the_route_template_and_status(client: Client) -> None:
    for path in ("/api/tasks/1", "/api/tasks/2", "/api/tasks/99999"):
        assert (await client.get(path)).status == 404  # no such task, but a known route
    assert (await client.get("/no/such/path")).status == 404
    assert (await client.get("/api/tasks/batch")).status == 405
    assert (await client.request("PROPFIND", "/api/tasks")).status == 405  # a WebDAV method
    assert (await client.post("/api/tasks", json={"type": "ok"})).status == 201
    assert (await client.post("/api/tasks", data=b"{", headers=JSON)).status == 400
    samples = await scrape(client)
    requests = samples["asynctask_http_requests_total"]
    assert requests[labels(route="/api/tasks/{id}", method="GET", status="404")] == 3
    assert requests[labels(route=UNMATCHED, method="GET", status="404")] == 1
    assert requests[labels(route="/api/tasks/batch", method="GET", status="405")] == 1
    assert requests[labels(route="/api/tasks", method="other", status="405")] == 1
    assert requests[labels(route="/api/tasks", method="POST", status="201")] == 1
    assert requests[labels(route="/api/tasks", method="POST", status="400")] == 1
    assert not [key for key in requests if "/no/such/path" in dict(key)["route"]]
    count = samples["asynctask_http_request_duration_seconds_count"]
    assert count[labels(route="/api/tasks/{id}", method="GET")] == 3
    buckets = samples["asynctask_http_request_duration_seconds_bucket"]
    assert buckets[labels(route="/api/tasks/{id}", method="GET", le="+Inf")] == 3
    # The scrape itself is counted once answered: the next scrape shows the previous one.
    again = (await scrape(client))["asynctask_http_requests_total"]
    assert again[labels(route="/metrics", method="GET", status="200")] == 1


async def test_a_scrape_within_the_cache_window_does_not_query_the_database(
    aiohttp_client: MakeClient, config: Config, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    queries = []
    real_count_tasks = counts.count_tasks

    async def counting(conn: Any) -> list[counts.Count]:
        queries.append(1)
        return await real_count_tasks(conn)

    monkeypatch.setattr(counts, "count_tasks", counting)
    app = create_app(config)
    app[keys.STATS].clock = lambda: clock[0]
    client = await aiohttp_client(app)
    high = labels(state="available", priority="high")
    insert(sql, 1, "available", 2)
    assert (await scrape(client))["asynctask_tasks"][high] == 2
    insert(sql, 1, "available", 5)
    clock[0] += stats.STATS_CACHE_SECONDS - 0.1
    assert (await scrape(client))["asynctask_tasks"][high] == 2  # the cached answer
    stale = await (await client.get("/api/stats")).json()  # /api/stats shares the cache
    assert stale["counts"]["high"]["available"] == 2
    assert len(queries) == 1
    clock[0] += 0.1
    assert (await scrape(client))["asynctask_tasks"][high] == 7
    assert len(queries) == 2


async def test_with_the_database_gone_a_scrape_is_200_without_the_task_gauges(
    aiohttp_client: MakeClient, config: Config, sql: Cursor, database_url: str
) -> None:
    app = create_app(config)
    app[keys.STATS].clock = iter(range(0, 10**6, 100)).__next__  # every call: a window later
    client = await aiohttp_client(app)
    assert (await scrape(client))["asynctask_database_up"] == {(): 1}
    assert (await client.get("/api/tasks/1")).status == 404
    with database_down(database_url):
        samples = await scrape(client)  # the clock moved past the window: this one queries
    assert samples["asynctask_database_up"] == {(): 0}
    assert "asynctask_tasks" not in samples and "asynctask_queue_lag_seconds" not in samples
    requests = samples["asynctask_http_requests_total"]
    assert requests[labels(route="/api/tasks/{id}", method="GET", status="404")] == 1
    assert "asynctask_tasks_created_total" in samples


async def test_a_failing_statistics_query_is_logged_not_a_500(
    client: Client, sql: Cursor, caplog: pytest.LogCaptureFixture
) -> None:
    # A first scrape opens the app's connection: the refresh below is then just the failing
    # query, not a connect that a loaded machine can stretch past STATS_TIMEOUT_SECONDS (which
    # reads as "unavailable", not logged: seen once in CI).
    assert (await scrape(client))["asynctask_database_up"] == {(): 1}
    sql.execute("DROP TABLE tasks")  # as if `asynctask migrate` had not run
    await asyncio.sleep(stats.STATS_CACHE_SECONDS)  # past the cached snapshot
    with caplog.at_level(logging.ERROR, logger="asynctask.api"):
        samples = await scrape(client)
    assert samples["asynctask_database_up"] == {(): 0}
    assert any("statistics query failed" in record.getMessage() for record in caplog.records)


async def test_metrics_stay_open_with_tokens_when_public_metrics_is_set(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    config = make_config(database_url, api__tokens=["s3cret"], api__public_metrics=True)
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/api/tasks")).status == 401
    requests = (await scrape(client))["asynctask_http_requests_total"]
    assert requests[labels(route="/api/tasks", method="GET", status="401")] == 1


async def test_each_app_has_its_own_registry(aiohttp_client: MakeClient, config: Config) -> None:
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))
    assert (await first.post("/api/tasks", json={"type": "ok"})).status == 201
    assert (await scrape(first))["asynctask_tasks_created_total"][labels(priority="normal")] == 1
    assert (await scrape(second))["asynctask_tasks_created_total"][labels(priority="normal")] == 0
