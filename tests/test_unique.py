"""unique_key: one unfinished task per (type, key), decided by a partial unique index."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiopg
import psycopg2.extensions
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from asynctask.core import claims, creates, task_rows
from asynctask.core import sql as catalogue
from asynctask.core.config import Config
from asynctask.core.connections import connect
from asynctask.core.lifecycle import Decision, Outcome
from asynctask.core.models import UNIQUE_KEY_STATES, Priority, State
from asynctask.service.app import create_app
from asynctask.service.rules import NUL_OR_SURROGATE, UNIQUE_KEY_LENGTH
from tests.test_worker import fetch

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Cursor = psycopg2.extensions.cursor
ROOT = Path(__file__).parent.parent
RACERS = 32


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[aiopg.Connection]:
    connection = await connect(database_url)
    yield connection
    connection.close()


def _rows(sql: Cursor, key: str) -> list[tuple[int, str]]:
    sql.execute("SELECT id, state FROM tasks WHERE unique_key = %s ORDER BY id", (key,))
    return [(int(i), str(s)) for i, s in sql.fetchall()]


async def test_a_held_key_answers_200_with_the_holder_and_inserts_nothing(
    client: Client, sql: Cursor
) -> None:
    first = await client.post(
        "/api/tasks", json={"type": "ok", "unique_key": "invoice-7", "data": {"n": 1}}
    )
    assert first.status == 201 and "X-Asynctask-Duplicate" not in first.headers
    holder = await first.json()
    assert holder["unique_key"] == "invoice-7"
    again = await client.post(
        "/api/tasks", json={"type": "ok", "unique_key": "invoice-7", "data": {"n": 2}}
    )
    assert again.status == 200 and again.headers["X-Asynctask-Duplicate"] == "true"
    assert again.headers["Location"] == f"/api/tasks/{holder['id']}"
    duplicate = await again.json()
    assert duplicate["id"] == holder["id"] and duplicate["data"] == {"n": 1}  # the holder's
    other_type = await client.post("/api/tasks", json={"type": "report", "unique_key": "invoice-7"})
    assert other_type.status == 201  # keys are per type
    assert len(_rows(sql, "invoice-7")) == 2


async def test_the_key_is_held_until_the_task_finishes(client: Client, conn: Any) -> None:
    holder = await (await client.post("/api/tasks", json={"type": "ok", "unique_key": "k"})).json()

    async def create() -> int:
        return int((await client.post("/api/tasks", json={"type": "ok", "unique_key": "k"})).status)

    # Claimed (running), failed back to retrying, handed back unstarted: all still hold it, and
    # none of those moves collides with the task's own index entry.
    token = str(uuid.uuid4())
    (claimed,) = await claims.claim(
        conn,
        priority=Priority.NORMAL,
        limit=1,
        locked_by="h:1:normal_1",
        token=token,
        lease_seconds=30,
        max_bytes=1 << 20,
    )
    assert claimed["id"] == holder["id"] and await create() == 200
    await claims.finish(conn, [Outcome(holder["id"], token, Decision(State.RETRYING, 0))])
    assert await create() == 200
    token = str(uuid.uuid4())
    await claims.claim(
        conn,
        priority=Priority.NORMAL,
        limit=1,
        locked_by="h:1:normal_1",
        token=token,
        lease_seconds=30,
        max_bytes=1 << 20,
    )
    await claims.finish(conn, [Outcome(holder["id"], token, Decision(State.COMPLETED))])
    assert await create() == 201  # finished: the key is free again


async def test_a_batch_that_repeats_a_key_maps_both_items_to_one_task(
    client: Client, sql: Cursor
) -> None:
    held = await (await client.post("/api/tasks", json={"type": "ok", "unique_key": "a"})).json()
    items = [
        {"type": "ok", "unique_key": "b"},
        {"type": "ok", "unique_key": "a"},
        {"type": "ok"},
        {"type": "ok", "unique_key": "b"},
    ]
    response = await client.post("/api/tasks/batch", json={"tasks": items})
    assert response.status == 201
    body = await response.json()
    ids = body["ids"]
    assert ids[1] == held["id"] and ids[0] == ids[3] and len(set(ids)) == 3
    assert body["duplicates"] == [1, 3]
    again = await client.post("/api/tasks/batch", json={"tasks": [items[0], items[1]]})
    assert again.status == 200 and again.headers["X-Asynctask-Duplicate"] == "true"
    assert (await again.json()) == {"ids": [ids[0], held["id"]], "duplicates": [0, 1]}
    plain = await (await client.post("/api/tasks/batch", json={"tasks": [{"type": "ok"}]})).json()
    assert plain["duplicates"] == []


async def test_racing_creates_make_exactly_one_task(
    aiohttp_client: MakeClient, config: Config, sql: Cursor
) -> None:
    """32 clients, single creates (group commit) and batches, on two API processes' pools."""
    clients = [await aiohttp_client(create_app(config)) for _ in range(2)]
    body = {"type": "ok", "unique_key": "race", "data": {"x": 1}}

    async def single(n: int) -> list[int]:
        response = await clients[n % 2].post("/api/tasks", json=body)
        assert response.status in (200, 201)
        return [(await response.json())["id"]]

    async def batch(n: int) -> list[int]:
        items = [{"type": "ok"}, body, body, {"type": "ok", "unique_key": f"own-{n}"}]
        response = await clients[n % 2].post("/api/tasks/batch", json={"tasks": items})
        assert response.status == 201
        return [int(i) for i in (await response.json())["ids"][1:3]]

    for _ in range(3):
        sql.execute("DELETE FROM tasks")
        answers = await asyncio.gather(*(single(n) if n % 4 else batch(n) for n in range(RACERS)))
        rows = _rows(sql, "race")
        assert len(rows) == 1
        assert {i for ids in answers for i in ids} == {rows[0][0]}
        sql.execute("SELECT count(*) FROM tasks WHERE unique_key LIKE 'own-%%'")
        assert fetch(sql) == (RACERS // 4,)


async def test_a_key_freed_between_insert_and_look_up_is_taken_again(
    conn: Any, sql: Cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    (holder,) = await task_rows.insert_task_rows(conn, [task_rows.NewRow("ok", 1, 5, "{}")])
    sql.execute("UPDATE tasks SET unique_key = 'k' WHERE id = %s", (holder["id"],))
    real_rows = creates.rows

    async def holder_finishes_first(connection: Any, query: Any, *params: Any) -> Any:
        if query.name == "find_unique":
            sql.execute("UPDATE tasks SET state = 'completed' WHERE id = %s", (holder["id"],))
        return await real_rows(connection, query, *params)

    monkeypatch.setattr(creates, "rows", holder_finishes_first)
    (created,) = await creates.create(conn, [task_rows.NewRow("ok", 1, 5, "{}", unique_key="k")])
    assert isinstance(created, creates.Created)
    assert not created.duplicate and created.row["id"] != holder["id"]
    assert _rows(sql, "k") == [(holder["id"], "completed"), (created.row["id"], "available")]


async def test_retrying_a_finished_task_whose_key_is_taken_is_409(
    client: Client, sql: Cursor
) -> None:
    old = await (await client.post("/api/tasks", json={"type": "ok", "unique_key": "k"})).json()
    await client.post(f"/api/tasks/{old['id']}/cancel")
    new = await (await client.post("/api/tasks", json={"type": "ok", "unique_key": "k"})).json()
    response = await client.post(f"/api/tasks/{old['id']}/retry")
    assert response.status == 409
    message = (await response.json())["error"]
    assert f"task {new['id']} (available)" in message and "'k'" in message
    await client.post(f"/api/tasks/{new['id']}/cancel")
    assert (await client.post(f"/api/tasks/{old['id']}/retry")).status == 200


@pytest.mark.parametrize(
    ("key", "message"),
    [("", UNIQUE_KEY_LENGTH), ("x" * 201, UNIQUE_KEY_LENGTH), (7, "Not a valid string.")],
)
async def test_bad_keys_are_refused_naming_the_field(
    client: Client, key: Any, message: str
) -> None:
    response = await client.post("/api/tasks", json={"type": "ok", "unique_key": key})
    assert response.status == 422
    assert (await response.json())["fields"] == {"unique_key": [message]}
    batch = await client.post(
        "/api/tasks/batch", json={"tasks": [{"type": "ok", "unique_key": key}]}
    )
    assert (await batch.json())["fields"] == {"tasks.0.unique_key": [message]}


async def test_a_key_of_200_characters_and_any_script_is_fine(client: Client) -> None:
    for key in ("x" * 200, "ключ-日本-😀"):
        response = await client.post("/api/tasks", json={"type": "ok", "unique_key": key})
        assert response.status == 201 and (await response.json())["unique_key"] == key
    nul = await client.post("/api/tasks", json={"type": "ok", "unique_key": "a\u0000b"})
    assert (await nul.json())["fields"] == {"unique_key": [NUL_OR_SURROGATE]}


def test_every_insert_names_the_index_the_schema_builds() -> None:
    """The partial index's states are models.UNIQUE_KEY_STATES, and every ON CONFLICT says so."""
    schema = (ROOT / "schema.sql").read_text(encoding="utf-8")
    index = re.search(r"CREATE UNIQUE INDEX IF NOT EXISTS tasks_unique_key_idx(.*?);", schema, re.S)
    assert index is not None
    states = ", ".join(f"'{state}'" for state in State if state in UNIQUE_KEY_STATES)
    condition = f"unique_key IS NOT NULL AND state IN ({states})"
    assert " ".join(index.group(1).split()) == f"ON tasks (type, unique_key) WHERE {condition}"
    statements = [catalogue.QUERIES["insert_unique"].text, schema]
    for text in statements:
        assert f"ON CONFLICT (type, unique_key) WHERE {condition} DO NOTHING" in " ".join(
            text.split()
        )
    for name in ("find_unique", "unique_key_holder"):
        assert condition in " ".join(catalogue.QUERIES[name].text.split())
