"""The client's I/O-free core (asynctask.client.calls and .retries): retry decisions, backoff,
batches, the wait loop's pacing, encoding and error answers. The calls themselves are tested end
to end against the real API in test_client.py."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from asynctask.client import calls, retries
from asynctask.client.errors import (
    APIError,
    APIStatusError,
    APITimeoutError,
    ServerError,
    ValidationError,
)
from asynctask.client.records import TaskRecord

SETTINGS = calls.Settings("http://api", None, 30.0, 3)
TASK = {
    "id": 1, "type": "ok", "priority": "low", "state": "available", "attempts": 0,
    "max_attempts": 5, "data": {}, "scheduled_at": "2026-12-01T00:00:00+00:00",
    "inserted_at": "2026-12-01T00:00:00+00:00", "updated_at": "2026-12-01T00:00:00+00:00",
    "started_at": None, "finished_at": None, "last_error": None, "future_field": 7,
}  # fmt: skip


def _answer(status: int, headers: dict[str, str] | None = None, **kwargs: object) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, request=httpx.Request("GET", "http://api"), **kwargs
    )  # type: ignore[arg-type]


def test_what_is_retried() -> None:
    create = calls.create({"type": "ok"})
    change = calls.change(1, "cancel")
    delay = retries.retry_delay
    for status in (408, 429, 502, 503, 504):
        assert delay(change, 0, SETTINGS, response=_answer(status)) is not None
    assert delay(create, 0, SETTINGS, response=_answer(409)) is not None  # the keyed twin
    assert delay(change, 0, SETTINGS, response=_answer(409)) is None
    for status in (200, 400, 404, 422, 500):
        assert delay(create, 0, SETTINGS, response=_answer(status)) is None
    assert delay(create, 3, SETTINGS, response=_answer(503)) is None  # max_retries spent
    broken = httpx.RemoteProtocolError("gone")
    refused = httpx.ConnectError("refused")
    assert delay(create, 0, SETTINGS, error=broken) is not None  # keyed: safe to send again
    assert delay(change, 0, SETTINGS, error=broken) is None  # may have been applied
    assert delay(change, 0, SETTINGS, error=refused) is not None  # never reached the server


def test_backoff_and_retry_after() -> None:
    for attempt, (low, high) in enumerate([(0.375, 0.5), (0.75, 1.0), (1.5, 2.0)]):
        assert low <= retries.backoff(attempt) <= high
    assert 6.0 <= retries.backoff(10) <= 8.0
    get = calls.get(1)
    answers = {"0": 0.0, "2.5": 2.5, "3600": 60.0, "-5": 0.0, "nan": 0.5, "Wed, 21 Oct": 0.5}
    for header, seconds in answers.items():
        response = _answer(503, {"Retry-After": header})
        assert retries.retry_delay(get, 0, SETTINGS, response=response) == seconds


def test_batches_split_by_count_and_size() -> None:
    tasks = [{"type": "ok", "data": {"n": n}} for n in range(25)]
    assert [len(b) for b in calls.batches(tasks, limit=10)] == [10, 10, 5]
    sized = list(calls.batches(tasks, max_bytes=100))
    assert sum(len(b) for b in sized) == 25 and all(sum(map(len, b)) < 100 for b in sized)
    assert [len(b) for b in calls.batches([{"pad": "x" * 500}, {"a": 1}], max_bytes=100)] == [1, 1]
    assert list(calls.batches([])) == []


def test_new_task_leaves_unset_fields_to_the_server() -> None:
    assert calls.new_task("ok") == {"type": "ok"}
    when = datetime(2026, 12, 1, tzinfo=UTC)
    task = calls.new_task("ok", {"a": 1}, priority="high", scheduled_at=when, unique_key="k")
    body = calls.create(task).content
    assert body == (
        b'{"type":"ok","data":{"a":1},"priority":"high",'
        b'"scheduled_at":"2026-12-01T00:00:00+00:00","unique_key":"k"}'
    )
    with pytest.raises(ValueError, match="no timezone"):
        calls.create(calls.new_task("ok", scheduled_at=datetime(2026, 12, 1)))
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        calls.create(calls.new_task("ok", {"a": {1}}))


def test_answers_become_records_or_typed_errors() -> None:
    record = TaskRecord.from_json(TASK)
    assert record.extra == {"future_field": 7} and record.as_json() == TASK
    duplicate = _answer(200, {calls.DUPLICATE_HEADER: "true"}, json=TASK)
    assert calls.create({"type": "ok"}).parse(duplicate).deduplicated
    with pytest.raises(ServerError) as server:
        calls.decoded(_answer(500, text="<html>proxy error</html>"))
    assert server.value.message == "<html>proxy error</html>"
    with pytest.raises(APIStatusError) as teapot:
        calls.decoded(_answer(418, json={"error": "short and stout"}))
    assert type(teapot.value) is APIStatusError and str(teapot.value) == "HTTP 418: short and stout"
    with pytest.raises(ValidationError) as invalid:
        calls.decoded(_answer(422, json={"error": "Invalid.", "fields": {"a": "bad"}}))
    assert invalid.value.fields == {"a": ["bad"]}
    with pytest.raises(APIError, match="not JSON"):
        calls.decoded(_answer(200, text="not json"))
    timeout = retries.connection_error(httpx.ReadTimeout("slow"), SETTINGS)
    assert isinstance(timeout, APITimeoutError) and str(timeout) == "http://api: ReadTimeout: slow"
    with pytest.raises(ValueError, match="max_retries"):
        calls.Settings.resolve("http://api", None, 30, -1)


def test_the_wait_loop_asks_for_what_is_left_and_paces_a_server_that_does_not_wait() -> None:
    loop = calls.WaitLoop(1, None)
    call = loop.next_call()
    assert call.params == {"wait_seconds": "60.000"} and call.read_timeout == 70.0
    # An answer at once to a 60 s ask, not final: pause before asking again.
    assert loop.after(TaskRecord.from_json(TASK)) == 1.0
    done = TaskRecord.from_json({**TASK, "state": "completed"})
    assert loop.after(done) is None
    short = calls.WaitLoop(1, 0.5)
    assert float(short.next_call().params["wait_seconds"]) <= 0.5
    assert short.after(TaskRecord.from_json(TASK)) == 0.0  # half a second asked: no pause
