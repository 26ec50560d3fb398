"""Results: a handler's return value is stored with its completed task and shown by GET one task."""

from __future__ import annotations

import json
from typing import Any

import psycopg2.extensions
import pytest
from aiohttp.test_utils import TestClient

from asynctask.core.lifecycle import Decision, Outcome
from asynctask.core.models import State
from asynctask.service.app import create_app
from asynctask.workers.results import ResultError, encode_result
from tests.conftest import make_config
from tests.test_worker import fetch, insert, running, states_are
from tests.waiting import wait_until_async

Cursor = psycopg2.extensions.cursor


def test_none_stores_nothing_and_values_are_compact_json() -> None:
    assert encode_result(None, 100) is None
    assert encode_result({"rows": 3, "ok": True}, 100) == '{"rows":3,"ok":true}'
    assert encode_result("é", 100) == '"é"'  # UTF-8, not \\u escapes
    assert encode_result([1, 2.5, None], 100) == "[1,2.5,null]"
    assert encode_result("back\\u0000slash", 100) == '"back\\\\u0000slash"'  # not a NUL


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({1, 2}, "not JSON-serialisable (TypeError: Object of type set"),
        (float("nan"), "not JSON-serialisable (ValueError: Out of range float values"),
        (float("inf"), "not JSON-serialisable"),
        ({"t": "a\x00b"}, "NUL character"),
        ("\ud800", "not valid Unicode"),
        ("x" * 200, "202 bytes as JSON, more than max_result_bytes = 100"),
    ],
)
def test_unfit_values_say_why(value: Any, why: str) -> None:
    with pytest.raises(ResultError, match=r"^result: ") as caught:
        encode_result(value, 100)
    assert why in str(caught.value)


def test_a_value_nested_too_deeply_is_refused() -> None:
    value: list[Any] = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(ResultError, match="nested too deeply"):
        encode_result(value, 10**6)


def _task(sql: Cursor, task_id: int) -> dict[str, Any]:
    sql.execute(
        "SELECT state, attempts, last_error, result::text FROM tasks WHERE id = %s", (task_id,)
    )
    state, attempts, last_error, result = fetch(sql)
    return {"state": state, "attempts": attempts, "last_error": last_error, "result": result}


async def test_results_are_stored_with_completed_tasks(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, max_result_bytes=1000)
    value = {"total": 12.5, "names": ["ä", "b"], "nested": {"deep": [1, {"x": None}]}}
    ids = {
        "object": insert(sql, "returns", {"value": value}),
        "string": insert(sql, "returns_async", {"value": "done"}),
        "nothing": insert(sql, "returns"),
        "zero": insert(sql, "returns", {"value": 0}),
    }
    async with running(config):
        await wait_until_async(states_are(sql, list(ids.values()), "completed"))
    rows = {name: _task(sql, task_id) for name, task_id in ids.items()}
    assert json.loads(rows["object"]["result"]) == value
    assert rows["string"]["result"] == '"done"'
    assert rows["nothing"]["result"] is None  # None returned: nothing stored
    assert rows["zero"]["result"] == "0"


@pytest.mark.parametrize(
    ("unfit", "why"),
    [
        ("set", "not JSON-serialisable"),
        ("nan", "not JSON-serialisable"),
        ("nul", "NUL character"),
        ("surrogate", "not valid Unicode"),
        ("large", "more than max_result_bytes = 1000"),
    ],
)
async def test_an_unfit_result_fails_the_attempt(
    database_url: str, sql: Cursor, unfit: str, why: str
) -> None:
    config = make_config(database_url, max_result_bytes=1000)
    task_id = insert(sql, "returns_async", {"unfit": unfit, "size": 2000}, max_attempts=2)
    ok_id = insert(sql, "returns", {"value": [1]})  # in the same acknowledgement, unharmed
    async with running(config):
        await wait_until_async(states_are(sql, [task_id], "failed"))
        await wait_until_async(states_are(sql, [ok_id], "completed"))
    row = _task(sql, task_id)
    assert row["attempts"] == 2 and row["result"] is None
    assert row["last_error"].startswith("result: ") and why in row["last_error"]
    assert _task(sql, ok_id)["result"] == "[1]"


async def test_finish_writes_results_only_for_batches_that_have_them(
    database_url: str, sql: Cursor
) -> None:
    # The statement's result array is NULL for a result-less batch; unnest pads it with NULLs.
    from asynctask.core import claims
    from asynctask.core.connections import connect

    ids = [insert(sql, "returns") for _ in range(3)]
    sql.execute("UPDATE tasks SET state = 'running', lock_token = %s", ("0" * 32,))
    token = "00000000-0000-0000-0000-000000000000"
    done = Decision(State.COMPLETED)
    conn = await connect(database_url)
    try:
        assert await claims.finish(conn, [Outcome(i, token, done) for i in ids[:2]]) == 2
        assert await claims.finish(conn, [Outcome(ids[2], token, done, result='{"a": 1}')]) == 1
    finally:
        conn.close()
    assert [_task(sql, i)["result"] for i in ids] == [None, None, '{"a": 1}']


async def test_get_shows_the_result_and_lists_leave_it_out(
    aiohttp_client: Any, database_url: str, sql: Cursor
) -> None:
    client: TestClient = await aiohttp_client(create_app(make_config(database_url)))
    task_id = insert(sql, "returns")
    # Stored as jsonb and spliced in as text: never parsed by the API.
    sql.execute(
        "UPDATE tasks SET state = 'completed', result = %s WHERE id = %s",
        ('{"rows": [1, 2], "note": "é"}', task_id),
    )
    one = await (await client.get(f"/api/tasks/{task_id}")).json()
    assert one["result"] == {"rows": [1, 2], "note": "é"}
    page = await (await client.get("/api/tasks")).json()
    assert "result" not in page["tasks"][0]
    other = insert(sql, "returns")
    assert (await (await client.get(f"/api/tasks/{other}")).json())["result"] is None


async def test_a_completion_with_a_result_is_not_mirrored_for_a_replacement() -> None:
    # A replacement records mirrored completions without their results, so those re-run instead.
    import ctypes

    from asynctask.workers.acks import AckBuffer

    mirror = (ctypes.c_longlong * 5)()
    acks = AckBuffer(None, 5, mirror, flush_at=100)  # type: ignore[arg-type]
    done = Decision(State.COMPLETED)
    await acks.record(Outcome(1, "t", done))
    await acks.record(Outcome(2, "t", done, result="[1]"))
    await acks.record(Outcome(3, "t", done))
    assert list(mirror)[:3] == [2, 1, 3]


def test_migrate_adds_results_and_schedules_to_a_database_with_tasks(sql: Cursor) -> None:
    from asynctask.core.schema import schema_sql

    full = schema_sql()
    before = full[: full.index("-- --- h/run:")]  # the schema as it was before this change
    sql.execute("DROP TABLE tasks; DROP TABLE schedule_state")
    sql.execute(before)
    for state in ("available", "running", "retrying", "completed", "failed", "cancelled"):
        sql.execute("INSERT INTO tasks (type, state) VALUES ('report', %s)", (state,))
    sql.execute(full)
    sql.execute(full)  # and again: idempotent
    sql.execute("SELECT count(*), count(result) FROM tasks")
    assert sql.fetchone() == (6, 0)
    sql.execute("SELECT count(*) FROM schedule_state")
    assert sql.fetchone() == (0,)
