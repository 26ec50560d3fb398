"""The Idempotency-Key header: the first answer again, never a second insert."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.core import creates, task_rows
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.creates import RequestKey
from asynctask.core.errors import IdempotencyKeyTaken
from asynctask.service.app import create_app
from asynctask.service.idempotency import BAD_KEY, HEADER, REUSED
from tests.conftest import make_config
from tests.test_worker import fetch

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
TASK = {"type": "ok", "data": {"invoice": 7}}


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


def _tasks(sql: Cursor) -> int:
    sql.execute("SELECT count(*) FROM tasks")
    return int(fetch(sql)[0])


async def _post(
    client: Client, key: str, body: Any = TASK, path: str = "/api/tasks", **headers: str
) -> tuple[int, dict[str, str], Any]:
    response = await client.post(path, json=body, headers={HEADER: key, **headers})
    return response.status, dict(response.headers), await response.json()


async def test_the_same_request_again_gets_the_first_answer_and_inserts_nothing(
    client: Client, sql: Cursor
) -> None:
    status, headers, first = await _post(client, "8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert status == 201 and "Idempotent-Replayed" not in headers
    sql.execute("UPDATE tasks SET state = 'completed', finished_at = now()")  # it ran meanwhile
    status, headers, again = await _post(client, '"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    assert status == 201 and headers["Idempotent-Replayed"] == "true"
    assert headers["Location"] == f"/api/tasks/{first['id']}"
    assert again["id"] == first["id"] and again["state"] == "completed"  # as it is now
    assert _tasks(sql) == 1


async def test_the_same_key_with_another_request_is_422(client: Client, sql: Cursor) -> None:
    await _post(client, "k1")
    for body, path in (
        ({**TASK, "priority": "high"}, "/api/tasks"),
        ({"tasks": [TASK]}, "/api/tasks/batch"),  # another route is another request
    ):
        status, _, answer = await _post(client, "k1", body, path)
        assert status == 422 and answer["fields"] == {HEADER: [REUSED]}
    assert _tasks(sql) == 1


async def test_a_twin_still_in_flight_is_409_with_retry_after(
    client: Client, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    real_create = creates.create

    async def slow_create(*args: Any) -> Any:
        await release.wait()
        return await real_create(*args)

    monkeypatch.setattr(creates, "create", slow_create)
    first = asyncio.create_task(_post(client, "twin"))
    await asyncio.sleep(0.1)
    status, headers, answer = await _post(client, "twin")
    assert status == 409 and headers["Retry-After"] == "1" and "in flight" in answer["error"]
    release.set()
    assert (await first)[0] == 201
    assert (await _post(client, "twin"))[0] == 201  # answered now: replayed
    assert _tasks(sql) == 1


async def test_twins_on_two_api_processes_wait_on_the_key_then_replay(
    database_url: str, sql: Cursor
) -> None:
    """The answer is written with the task: a twin's insert waits for it, then fails over."""
    first, second = await connect(database_url), await connect(database_url)
    key = RequestKey("", "k", "same request")
    row = task_rows.NewRow("ok", 1, 5, "{}")
    try:
        await creates.execute_text(first, "BEGIN")
        (created,) = await creates.create(first, [row], [key])
        twin = asyncio.create_task(creates.create(second, [row], [key]))
        await asyncio.sleep(0.3)
        assert not twin.done()  # waiting on the first's uncommitted answer
        await creates.execute_text(first, "COMMIT")
        with pytest.raises(IdempotencyKeyTaken):
            await twin
        answer = await creates.remembered(second, key)
    finally:
        first.close()
        second.close()
    assert isinstance(created, creates.Created)
    assert answer is not None and answer.task_ids == [created.row["id"]] and answer.status == 201
    assert _tasks(sql) == 1


async def test_a_key_whose_first_answer_was_a_duplicate_keeps_that_answer(
    client: Client, sql: Cursor
) -> None:
    holder = (await _post(client, "first", {"type": "ok", "unique_key": "u"}))[2]
    status, headers, answer = await _post(client, "second", {"type": "ok", "unique_key": "u"})
    assert status == 200 and headers["X-Asynctask-Duplicate"] == "true"
    assert answer["id"] == holder["id"]
    sql.execute("UPDATE tasks SET state = 'completed'")  # the key is free now, but not for a retry
    status, headers, again = await _post(client, "second", {"type": "ok", "unique_key": "u"})
    assert (status, again["id"]) == (200, holder["id"]) and headers["Idempotent-Replayed"] == "true"
    assert _tasks(sql) == 1


async def test_a_batch_is_answered_once(client: Client, sql: Cursor) -> None:
    body = {"tasks": [TASK, {"type": "ok", "unique_key": "u"}, {"type": "ok", "unique_key": "u"}]}
    status, _, first = await _post(client, "b", body, "/api/tasks/batch")
    assert status == 201 and first["duplicates"] == [2]
    status, headers, again = await _post(client, "b", body, "/api/tasks/batch")
    assert (status, again) == (201, first) and headers["Idempotent-Replayed"] == "true"
    assert _tasks(sql) == 2


async def test_a_failed_validation_stores_nothing(client: Client, sql: Cursor) -> None:
    status, _, _ = await _post(client, "v", {"type": "ok", "priority": "urgent"})
    assert status == 422
    sql.execute("SELECT count(*) FROM idempotency_keys")
    assert fetch(sql) == (0,)
    assert (await _post(client, "v"))[0] == 201  # the key is still unused


async def test_an_expired_answer_lets_the_key_make_a_new_task(client: Client, sql: Cursor) -> None:
    first = (await _post(client, "old"))[2]
    sql.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    status, headers, again = await _post(client, "old")
    assert status == 201 and "Idempotent-Replayed" not in headers and again["id"] != first["id"]


async def test_keys_are_per_token(aiohttp_client: MakeClient, database_url: str) -> None:
    config = make_config(database_url, api__tokens=["alice-token", "bob-token"])
    client = await aiohttp_client(create_app(config))
    alice = await _post(client, "k", Authorization="Bearer alice-token")
    bob = await _post(client, "k", Authorization="Bearer bob-token")
    assert alice[0] == bob[0] == 201 and alice[2]["id"] != bob[2]["id"]
    assert (await _post(client, "k", Authorization="Bearer bob-token"))[2]["id"] == bob[2]["id"]


async def test_creates_in_one_group_fail_alone_when_one_key_was_used(
    client: Client, sql: Cursor
) -> None:
    await _post(client, "used")
    sql.execute("SELECT id FROM tasks")
    (used,) = fetch(sql)
    answers = await asyncio.gather(
        *(_post(client, f"fresh-{n}") for n in range(6)), _post(client, "used")
    )
    assert [status for status, _, _ in answers] == [201] * 7
    assert answers[-1][2]["id"] == used and answers[-1][1]["Idempotent-Replayed"] == "true"
    assert _tasks(sql) == 7


@pytest.mark.parametrize("key", ["", "a b", '"unterminated', "é", "x" * 256, '""', '"a\\b"'])
async def test_a_malformed_key_is_refused_naming_the_header(
    client: Client, sql: Cursor, key: str
) -> None:
    response = await client.post(
        "/api/tasks",
        data=json.dumps(TASK).encode(),
        headers={HEADER: key, "Content-Type": "application/json"},
    )
    assert response.status == 422
    assert (await response.json())["fields"] == {HEADER: [BAD_KEY]}
    assert _tasks(sql) == 0


async def test_the_document_describes_the_header_and_its_answers(client: Client) -> None:
    document = await (await client.get("/api/openapi")).json()
    for path in ("/api/tasks", "/api/tasks/batch"):
        operation = document["paths"][path]["post"]
        (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == HEADER and header["schema"]["maxLength"] == 255
        assert "Idempotent-Replayed" in operation["responses"]["201"]["headers"]
        assert "Retry-After" in operation["responses"]["409"]["headers"]
