"""The HTTP API on a real PostgreSQL: create, batch, read, list, cancel, retry, errors, NOTIFY."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from asynctask.core import connections, task_rows
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.exposure import is_loopback
from asynctask.service import status_views, task_views
from asynctask.service.app import create_app, serve
from asynctask.service.auth import auth_middleware
from asynctask.service.rules import ATTEMPTS_RANGE, NOT_FINITE
from tests.conftest import TEST_HANDLERS, make_config
from tests.outage import database_down, database_name

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
JSON = {"Content-Type": "application/json"}
Cursor = psycopg2.extensions.cursor


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


@pytest.fixture
def listener(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """Its own autocommit connection, LISTENing on all three channels."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("LISTEN tasks_high; LISTEN tasks_normal; LISTEN tasks_low")
    yield conn
    conn.close()


def _notifications(
    conn: psycopg2.extensions.connection, wait: float = 1.0
) -> list[tuple[str, str]]:
    """Every notification that arrives within `wait` seconds, as (channel, payload)."""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        select.select([conn], [], [], left)
        conn.poll()
    found = [(n.channel, n.payload) for n in conn.notifies]
    conn.notifies.clear()
    return found


async def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert ("fields" in body) == (status == 422)
    return body


async def _fields(response: Any) -> dict[str, list[str]]:
    return (await _error(response, 422))["fields"]  # type: ignore[no-any-return]


def _count(sql: Cursor) -> int:
    sql.execute("SELECT count(*) FROM tasks")
    row = sql.fetchone()
    assert row is not None
    return int(row[0])


# --- create --------------------------------------------------------------------------------------


async def test_create_answers_201_with_the_task_and_its_location(client: Client) -> None:
    response = await client.post(
        "/api/tasks",
        json={"type": "report", "priority": "high", "max_attempts": 3, "data": {"a": 1}},
    )
    assert response.status == 201
    task = await response.json()
    assert response.headers["Location"] == f"/api/tasks/{task['id']}"
    assert len(response.headers["X-Request-Id"]) == 32
    assert set(task) == {
        "id", "type", "priority", "state", "attempts", "max_attempts", "data", "scheduled_at",
        "inserted_at", "updated_at", "started_at", "finished_at", "last_error", "unique_key",
    }  # fmt: skip
    assert task["type"] == "report" and task["priority"] == "high" and task["max_attempts"] == 3
    assert task["state"] == "available" and task["attempts"] == 0 and task["data"] == {"a": 1}
    assert task["started_at"] is None and task["finished_at"] is None and task["last_error"] is None
    assert task["inserted_at"].endswith("+00:00") or "+" in task["inserted_at"][-6:]
    again = await client.get(response.headers["Location"])
    assert await again.json() == {**task, "result": None}  # one task is shown with its result


async def test_data_keeps_unicode_and_backslashes(client: Client) -> None:
    data = {"naïve": "日本語 \\u0000 is text here", "emoji": "\U0001f600", "n": [1.5, None, True]}
    created = await (await client.post("/api/tasks", json={"type": "ok", "data": data})).json()
    assert created["data"] == data
    ids = (
        await (
            await client.post("/api/tasks/batch", json={"tasks": [{"type": "ok", "data": data}]})
        ).json()
    )["ids"]
    assert (await (await client.get(f"/api/tasks/{ids[0]}")).json())["data"] == data


async def test_create_defaults(aiohttp_client: MakeClient, database_url: str) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, max_attempts=7)))
    task = await (await client.post("/api/tasks", json={"type": "ok"})).json()
    assert (task["priority"], task["max_attempts"], task["data"]) == ("normal", 7, {})


async def test_integral_float_attempts_are_integers(client: Client) -> None:
    # JSON Schema counts 3.0 as an integer, so a client generated from the document may send it.
    task = await (await client.post("/api/tasks", json={"type": "ok", "max_attempts": 3.0})).json()
    assert task["max_attempts"] == 3


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "type", "Missing data for required field."),
        ({"type": "nope"}, "type", "Must be one of: " + ", ".join(sorted(TEST_HANDLERS))),
        ({"type": 1}, "type", "Must be one of:"),
        ({"type": "ok", "priority": "urgent"}, "priority", "Must be one of: high, normal, low."),
        ({"type": "ok", "priority": 1}, "priority", "Must be one of: high, normal, low."),
        ({"type": "ok", "max_attempts": True}, "max_attempts", "Not a valid integer."),
        ({"type": "ok", "max_attempts": 1.5}, "max_attempts", "Not a valid integer."),
        ({"type": "ok", "max_attempts": "3"}, "max_attempts", "Not a valid integer."),
        ({"type": "ok", "max_attempts": None}, "max_attempts", "Not a valid integer."),
        ({"type": "ok", "max_attempts": 0}, "max_attempts", "Must be greater than or equal to 1"),
        ({"type": "ok", "max_attempts": 2**31}, "max_attempts", "less than or equal to 2147483647"),
        ({"type": "ok", "data": [1]}, "data", "Must be a JSON object."),
        ({"type": "ok", "data": "x"}, "data", "Must be a JSON object."),
        ({"type": "ok", "data": {"k": "a\u0000b"}}, "data", "Must not contain \\u0000"),
        ({"type": "ok", "data": {"k": "\ud800"}}, "data", "unpaired surrogates"),
        ({"type": "ok", "colour": "red"}, "colour", "Unknown field."),
    ],
)
async def test_create_rejects_each_bad_field_by_name(
    client: Client, sql: Cursor, body: dict[str, Any], field: str, message: str
) -> None:
    fields = await _fields(await client.post("/api/tasks", json=body))
    assert list(fields) == [field]
    assert fields[field][0].startswith(message) or message in fields[field][0]
    assert _count(sql) == 0


_OVERFLOW = b'{"type": "ok", "data": {"n": [1, 1e400]}}'


async def test_create_rejects_a_number_that_overflows_a_double(client: Client, sql: Cursor) -> None:
    # Valid JSON that Python reads as inf: it must be a 422 naming data, never a 500.
    fields = await _fields(await client.post("/api/tasks", data=_OVERFLOW, headers=JSON))
    assert fields == {"data": [NOT_FINITE]}
    fields = await _fields(
        await client.post(
            "/api/tasks/batch",
            data=b'{"tasks": [{"type": "ok"}, ' + _OVERFLOW + b"]}",
            headers=JSON,
        )
    )
    assert fields == {"tasks.1.data": [NOT_FINITE]}
    assert _count(sql) == 0


async def test_create_lists_every_error_at_once(client: Client) -> None:
    body = {"type": "x", "priority": "x", "max_attempts": "x", "data": "x", "extra": 1}
    fields = await _fields(await client.post("/api/tasks", json=body))
    assert set(fields) == {"type", "priority", "max_attempts", "data", "extra"}


@pytest.mark.parametrize("raw", [b"{", b"", b"nope", b'{"type": NaN}'])
async def test_malformed_json_is_400(client: Client, raw: bytes) -> None:
    await _error(await client.post("/api/tasks", data=raw, headers=JSON), 400)


async def test_a_body_that_is_not_utf8_is_400_in_words(client: Client) -> None:
    latin1 = '{"type": "report", "data": {"name": "José"}}'.encode("latin-1")
    body = await _error(await client.post("/api/tasks", data=latin1, headers=JSON), 400)
    assert body["error"] == (
        "Request body is not valid UTF-8 text: byte 0xe9 at offset 40 cannot be decoded"
        " (invalid continuation byte). Send JSON encoded as UTF-8."
    )
    batch = b'{"tasks": [{"type": "report", "data": {"x": "\xff"}}]}'
    body = await _error(await client.post("/api/tasks/batch", data=batch, headers=JSON), 400)
    assert body["error"].startswith("Request body is not valid UTF-8 text: byte 0xff at offset 45")


@pytest.mark.parametrize("raw", [b"[]", b'"report"', b"3", b"null"])
async def test_a_body_that_is_not_an_object_is_422(client: Client, raw: bytes) -> None:
    assert await _fields(await client.post("/api/tasks", data=raw, headers=JSON)) == {
        "_schema": ["Must be a JSON object."]
    }


async def test_a_body_over_the_limit_is_413(aiohttp_client: MakeClient, database_url: str) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, api__max_body_bytes=1024)))
    body = {"type": "ok", "data": {"blob": "x" * 2000}}
    error = await _error(await client.post("/api/tasks", json=body), 413)
    assert "1024 bytes" in error["error"]
    batch = {"tasks": [{"type": "ok"}] * 100}
    await _error(await client.post("/api/tasks/batch", json=batch), 413)


# --- NOTIFY --------------------------------------------------------------------------------------


async def test_create_notifies_the_priority_channel_with_the_id(
    client: Client, listener: psycopg2.extensions.connection
) -> None:
    task = await (await client.post("/api/tasks", json={"type": "ok", "priority": "high"})).json()
    assert _notifications(listener) == [("tasks_high", str(task["id"]))]


async def test_a_notification_is_not_delivered_before_commit(
    database_url: str, listener: psycopg2.extensions.connection
) -> None:
    conn = await connect(database_url)
    try:
        (await task_rows.insert_task_rows(conn, [task_rows.NewRow("ok", 3, 5, "{}")]))[
            0
        ]  # prepares the statement outside the block
        assert _notifications(listener) == [("tasks_low", "1")]
        async with conn.cursor() as cur:
            await cur.execute("BEGIN")  # aiopg is autocommit; an explicit block holds the commit
            task = (await task_rows.insert_task_rows(conn, [task_rows.NewRow("ok", 1, 5, "{}")]))[0]
            assert _notifications(listener, wait=0.5) == []
            await cur.execute("COMMIT")
        assert _notifications(listener) == [("tasks_high", str(task["id"]))]
    finally:
        conn.close()


async def test_batch_sends_one_notification_per_priority_touched(
    client: Client, listener: psycopg2.extensions.connection
) -> None:
    tasks = [{"type": "ok", "priority": p} for p in ("high", "low", "high", "normal", "high")]
    response = await client.post("/api/tasks/batch", json={"tasks": tasks})
    assert response.status == 201
    ids = (await response.json())["ids"]
    # Several new high tasks: wake every high worker (""); one low task: its id picks one worker.
    assert sorted(_notifications(listener)) == [
        ("tasks_high", ""),
        ("tasks_low", str(ids[1])),
        ("tasks_normal", str(ids[3])),
    ]


# --- batch ---------------------------------------------------------------------------------------


async def test_batch_answers_ids_in_request_order(client: Client, sql: Cursor) -> None:
    tasks = [
        {"type": "ok", "priority": ("low", "high", "normal")[i % 3], "data": {"i": i}}
        for i in range(50)
    ]
    response = await client.post("/api/tasks/batch", json={"tasks": tasks})
    assert response.status == 201
    ids = (await response.json())["ids"]
    assert len(ids) == 50 and len(set(ids)) == 50
    sql.execute("SELECT id, (data->>'i')::int, priority, max_attempts FROM tasks")
    by_id = {row[0]: row[1:] for row in sql.fetchall()}
    assert [by_id[task_id][0] for task_id in ids] == list(range(50))
    assert {by_id[task_id][1] for task_id in ids} == {1, 2, 3}
    assert {by_id[task_id][2] for task_id in ids} == {5}  # the configured default


async def test_batch_validation_names_index_and_field_and_inserts_nothing(
    client: Client, sql: Cursor
) -> None:
    tasks: list[Any] = [{"type": "ok"} for _ in range(10)]
    tasks[3] = {"type": "ok", "priority": "urgent"}
    tasks[7] = {"type": "ok", "max_attempts": 0, "x": 1}
    tasks[8] = "not an object"
    fields = await _fields(await client.post("/api/tasks/batch", json={"tasks": tasks}))
    assert fields == {
        "tasks.3.priority": ["Must be one of: high, normal, low."],
        "tasks.7.max_attempts": [ATTEMPTS_RANGE],
        "tasks.7.x": ["Unknown field."],
        "tasks.8": ["Must be a JSON object."],
    }  # fmt: skip
    assert _count(sql) == 0


async def test_batch_reports_at_most_a_hundred_errors(client: Client, sql: Cursor) -> None:
    tasks = [{"type": "ok", "priority": "urgent"}] * 500
    fields = await _fields(await client.post("/api/tasks/batch", json={"tasks": tasks}))
    assert len(fields) == 100 and "tasks.99.priority" in fields
    assert _count(sql) == 0


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"tasks": ["Missing data for required field."]}),
        ({"tasks": []}, {"tasks": ["Length must be between 1 and 10000."]}),
        ({"tasks": [{"type": "ok"}] * 10_001}, {"tasks": ["Length must be between 1 and 10000."]}),
        ({"tasks": {"type": "ok"}}, {"tasks": ["Not a valid list."]}),
        ({"tasks": [{"type": "ok"}], "more": 1}, {"more": ["Unknown field."]}),
        ([{"type": "ok"}], {"_schema": ["Must be a JSON object."]}),
    ],
)
async def test_batch_shape_errors(
    aiohttp_client: MakeClient, database_url: str, body: Any, fields: dict[str, list[str]]
) -> None:
    config = make_config(database_url, api__max_body_bytes=10 * 1024 * 1024)
    client = await aiohttp_client(create_app(config))
    assert await _fields(await client.post("/api/tasks/batch", json=body)) == fields


async def test_batch_is_atomic_when_the_database_refuses_one_row(
    client: Client, sql: Cursor
) -> None:
    sql.execute("ALTER TABLE tasks ADD CONSTRAINT no_poison CHECK (NOT data ? 'poison')")
    tasks = [{"type": "ok", "data": {"i": i}} for i in range(20)]
    tasks[13]["data"] = {"poison": True}
    response = await client.post("/api/tasks/batch", json={"tasks": tasks})
    body = await _error(response, 500)
    assert "no_poison" not in body["error"] and "CHECK" not in body["error"]
    assert _count(sql) == 0


async def test_batch_of_ten_thousand_is_accepted(
    aiohttp_client: MakeClient, database_url: str, sql: Cursor
) -> None:
    client = await aiohttp_client(
        create_app(make_config(database_url, api__max_body_bytes=4 * 1024 * 1024))
    )
    tasks = [{"type": "report", "priority": "normal", "data": {"i": i}} for i in range(10_000)]
    response = await client.post(
        "/api/tasks/batch", data=json.dumps({"tasks": tasks}), headers=JSON
    )
    assert response.status == 201
    assert len((await response.json())["ids"]) == 10_000 == _count(sql)


# --- read, list ----------------------------------------------------------------------------------


BAD_IDS = ["999", "abc", "-1", "1.5", "99999999999999999999999", "%D9%A1"]  # last: Arabic 1


@pytest.mark.parametrize("path", [f"/api/tasks/{bad}" for bad in BAD_IDS])
async def test_unknown_or_impossible_ids_are_404(client: Client, path: str) -> None:
    await _error(await client.get(path), 404)
    await _error(await client.post(path + "/cancel"), 404)
    await _error(await client.post(path + "/retry"), 404)


async def _create(client: Client, n: int, **fields: Any) -> list[int]:
    response = await client.post("/api/tasks/batch", json={"tasks": [{"type": "ok", **fields}] * n})
    return list((await response.json())["ids"])


async def test_list_pages_through_everything_newest_first(client: Client) -> None:
    ids = await _create(client, 25)
    seen: list[int] = []
    url = "/api/tasks?limit=10"
    pages = 0
    while True:
        page = await (await client.get(url)).json()
        pages += 1
        seen += [task["id"] for task in page["tasks"]]
        if page["next_cursor"] is None:
            break
        url = f"/api/tasks?limit=10&cursor={page['next_cursor']}"
    assert seen == sorted(ids, reverse=True) and pages == 3


async def test_list_without_more_pages_has_no_cursor(client: Client) -> None:
    await _create(client, 10)
    page = await (await client.get("/api/tasks?limit=10")).json()
    assert len(page["tasks"]) == 10 and page["next_cursor"] is None
    page = await (await client.get("/api/tasks")).json()
    assert len(page["tasks"]) == 10 and page["next_cursor"] is None


async def test_list_filters(client: Client, sql: Cursor) -> None:
    high = await _create(client, 3, priority="high")
    await _create(client, 2, type="report")
    sql.execute("UPDATE tasks SET state = 'failed' WHERE id = %s", (high[0],))

    async def ids(query: str) -> list[int]:
        page = await (await client.get("/api/tasks?" + query)).json()
        return [task["id"] for task in page["tasks"]]

    assert await ids("priority=high") == sorted(high, reverse=True)
    assert await ids("state=failed") == [high[0]]
    assert await ids("state=available&priority=high") == sorted(high[1:], reverse=True)
    assert len(await ids("type=report")) == 2
    assert await ids("type=nope") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("state=done", "state"),
        ("priority=1", "priority"),
        ("type=a%00b", "type"),
        ("cursor=%%%", "cursor"),
        ("cursor=", "cursor"),
        ("cursor=ABC", "cursor"),
        ("cursor=12345678901234", "cursor"),
        ("cursor=a%0A", "cursor"),
        ("colour=red", "colour"),
    ],
)
async def test_list_rejects_bad_query_by_name(client: Client, query: str, field: str) -> None:
    assert list(await _fields(await client.get("/api/tasks?" + query))) == [field]


def test_cursor_round_trip() -> None:
    for task_id in (0, 1, 42, 36**5, 2**63 - 1):
        assert task_views.decode_cursor(task_views.encode_cursor(task_id)) == task_id
    assert task_views.decode_cursor("z" * 13) is None  # past every bigint: no bound


async def test_every_cursor_the_document_allows_is_accepted(client: Client) -> None:
    ids = await _create(client, 3)
    for cursor, expected in (("0", []), ("zzzzzzzzzzzzz", ids[::-1]), ("0000001", [])):
        page = await (await client.get(f"/api/tasks?cursor={cursor}")).json()
        assert [task["id"] for task in page["tasks"]] == expected


# --- cancel, retry -------------------------------------------------------------------------------


async def test_cancel_then_retry(client: Client, sql: Cursor) -> None:
    (task_id,) = await _create(client, 1)
    await _error(await client.post(f"/api/tasks/{task_id}/retry"), 409)
    cancelled = await client.post(f"/api/tasks/{task_id}/cancel")
    assert cancelled.status == 200
    task = await cancelled.json()
    assert task["state"] == "cancelled" and task["finished_at"] is not None
    error = await _error(await client.post(f"/api/tasks/{task_id}/cancel"), 409)
    assert "cancelled" in error["error"]
    retried = await (await client.post(f"/api/tasks/{task_id}/retry")).json()
    assert retried["state"] == "available" and retried["finished_at"] is None
    sql.execute("UPDATE tasks SET state = 'completed' WHERE id = %s", (task_id,))
    await _error(await client.post(f"/api/tasks/{task_id}/cancel"), 409)
    sql.execute("UPDATE tasks SET state = 'retrying' WHERE id = %s", (task_id,))
    assert (await client.post(f"/api/tasks/{task_id}/cancel")).status == 200


# --- routing, probes, failures -------------------------------------------------------------------


async def test_unknown_route_and_wrong_method_are_json(client: Client) -> None:
    await _error(await client.get("/nope"), 404)
    response = await client.delete("/api/tasks")
    await _error(response, 405)
    assert response.headers["Allow"] == "GET,POST"
    await _error(await client.get("/api/tasks/batch"), 405)
    await _error(await client.put("/api/tasks/1"), 405)


async def test_the_pool_connections_are_named_in_pg_stat_activity(
    client: Client, sql: Cursor
) -> None:
    await _error(await client.get("/api/tasks/12345"), 404)  # one query, so one connection
    sql.execute(
        "SELECT DISTINCT application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert sql.fetchall() == [("asynctask api",)]


async def test_health_and_ready(client: Client) -> None:
    assert await (await client.get("/health")).json() == {"status": "ok"}
    assert await (await client.get("/ready")).json() == {"status": "ok"}


async def test_ready_is_503_when_select_1_is_slow(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow(conn: Any) -> None:
        await asyncio.sleep(5)

    monkeypatch.setattr(connections, "ping", slow)
    monkeypatch.setattr(status_views, "READY_TIMEOUT_SECONDS", 0.2)
    started = time.monotonic()
    response = await client.get("/ready")
    assert response.status == 503 and time.monotonic() - started < 2
    body = await response.json()
    assert body["status"] == "unavailable" and "SELECT 1" in body["error"]


async def test_a_database_that_went_away_is_503_and_health_stays_200(
    client: Client, sql: Cursor, database_url: str
) -> None:
    assert (await client.get("/ready")).status == 200
    name = database_name(database_url)
    with database_down(database_url):
        for _ in range(2):  # first the dead pooled connection, then a refused new one
            response = await client.get("/api/tasks/1")
            body = await _error(response, 503)
            assert response.headers["Retry-After"] == "1" and name not in body["error"]
        assert (await client.get("/ready")).status == 503
        assert (await client.get("/health")).status == 200


async def test_database_unavailable_anywhere_is_503(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: Any, **kwargs: Any) -> None:
        raise DatabaseUnavailable("database at postgresql://secret-host is unavailable")

    monkeypatch.setattr(task_rows, "insert_tasks", down)
    body = await _error(
        await client.post("/api/tasks/batch", json={"tasks": [{"type": "ok"}]}), 503
    )
    assert "secret-host" not in body["error"]


async def test_unexpected_errors_are_logged_with_the_request_id_and_leak_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("password=hunter2 at /srv/secret.py")

    monkeypatch.setattr(task_rows, "get_task", broken)
    with caplog.at_level(logging.ERROR, logger="asynctask.api"):
        response = await client.get("/api/tasks/1")
    body = await _error(response, 500)
    request_id = response.headers["X-Request-Id"]
    assert "hunter2" not in await response.text() and request_id in body["error"]
    assert any(request_id in record.getMessage() and record.exc_info for record in caplog.records)


async def test_tokens_guard_the_api_and_leave_the_probes_and_docs_open(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    config = make_config(database_url, api__tokens=["s3cret", "other"])
    client = await aiohttp_client(create_app(config))
    response = await client.post("/api/tasks", json={"type": "ok"})
    await _error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer nope"}
    await _error(await client.get("/api/tasks", headers=wrong), 401)
    right = {"Authorization": "Bearer other"}
    assert (await client.post("/api/tasks", json={"type": "ok"}, headers=right)).status == 201
    for public in ("/health", "/ready", "/api/openapi", "/api/docs"):
        assert (await client.get(public)).status == 200


@pytest.mark.parametrize(
    "header",
    [
        "bearer other",  # the scheme is case-insensitive
        "Basic other",
        "Bearer",
        "Bearer  other",
        "other",
    ],
)
async def test_token_headers(database_url: str, header: str) -> None:
    config = make_config(database_url, api__tokens=["other"])
    request = make_mocked_request(
        "GET", "/api/tasks", headers={"Authorization": header}, app=create_app(config)
    )

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    response = await auth_middleware(request, handler)
    assert response.status == (200 if header == "bearer other" else 401)


async def test_a_token_header_that_is_not_utf8_is_401_not_500(
    aiohttp_client: MakeClient, database_url: str
) -> None:
    client = await aiohttp_client(create_app(make_config(database_url, api__tokens=["other"])))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"GET /api/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ") and b'"error"' in answer


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("example.com")


def test_serve_warns_on_an_open_host_without_tokens_and_logs_the_url(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(database_url, api__allow_anonymous=True)
    calls: list[dict[str, Any]] = []

    def fake_run_app(app: web.Application, **kwargs: Any) -> None:
        calls.append(kwargs)
        kwargs["print"]("banner")

    monkeypatch.setattr(web, "run_app", fake_run_app)
    with caplog.at_level(logging.INFO, logger="asynctask.api"):
        serve(config, "0.0.0.0", 4321)
    assert calls[0]["host"] == "0.0.0.0" and calls[0]["port"] == 4321
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "WARNING" and "without api.tokens" in m for level, m in messages)
    assert ("INFO", "asynctask api on http://0.0.0.0:4321 (docs at /api/docs)") in messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="asynctask.api"):
        serve(config, "127.0.0.1", 4321)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
