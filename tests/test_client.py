"""asynctask.Client against a real `asynctask api` and workers on a real database; its retry path
against a deliberately failing proxy in front of that API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psycopg2
import pytest

from asynctask import Client
from asynctask.client import (
    BATCH_LIMIT,
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PartialBatchError,
    TaskRecord,
    UnavailableError,
    ValidationError,
    WaitTimeoutError,
    new_task,
)
from asynctask.service.rules import BATCH_MAX
from tests.api_server import Stack, free_port, running
from tests.flaky_server import DROP, FORWARD_THEN_DROP, UNAVAILABLE, FlakyProxy


@pytest.fixture
def client(api_stack: Stack) -> Iterator[Client]:
    with Client(api_stack.url) as client:
        yield client


def _count(stack: Stack, marker: str) -> int:
    conn = psycopg2.connect(stack.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks WHERE data->>'marker' = %s", (marker,))
            row = cur.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


# --- the happy paths, against the real API -------------------------------------------------------


def test_create_returns_a_typed_task(client: Client) -> None:
    task = client.create("ok", {"month": "2024-05"}, priority="low", max_attempts=3)
    assert isinstance(task, TaskRecord)
    assert (task.type, task.priority, task.state) == ("ok", "low", "available")
    assert (task.attempts, task.max_attempts, task.data) == (0, 3, {"month": "2024-05"})
    assert isinstance(task.inserted_at, datetime) and task.inserted_at.tzinfo is not None
    assert task.started_at is None and task.finished_at is None and not task.finished
    assert not task.deduplicated
    assert client.get(task.id) == task


def test_the_url_and_token_come_from_the_environment(
    api_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCTASK_URL", api_stack.url + "/")
    monkeypatch.setenv("ASYNCTASK_TOKEN", "from-env")
    with Client() as client:
        assert client.settings.base_url == api_stack.url
        assert client.settings.token == "from-env"
        assert client.create("ok", priority="low").state == "available"
    with Client("http://elsewhere:1", token="given") as client:
        assert (client.settings.base_url, client.settings.token) == ("http://elsewhere:1", "given")
    monkeypatch.delenv("ASYNCTASK_URL")
    with Client() as client:
        assert client.settings.base_url == "http://127.0.0.1:4000"


def test_create_many_splits_into_the_apis_batches_and_keeps_the_order(api_stack: Stack) -> None:
    assert BATCH_LIMIT == BATCH_MAX
    posts: list[int] = []

    def count(request: httpx.Request) -> None:
        posts.append(len(request.content))

    with Client(api_stack.url, http_client=httpx.Client(event_hooks={"request": [count]})) as c:
        tasks = [new_task("ok", {"n": n}, priority="low") for n in range(2 * BATCH_LIMIT + 1)]
        ids = c.create_many(tasks)
        assert len(posts) == 3 and len(ids) == len(tasks)
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert c.get(ids[-1]).data == {"n": 2 * BATCH_LIMIT}
        # A small byte budget splits by size as well: still one id per task, in order.
        posts.clear()
        ids = c.create_many(
            [new_task("ok", {"pad": "x" * 100, "n": n}, priority="low") for n in range(10)],
            batch_bytes=400,
        )
        assert len(posts) == 5 and [c.get(i).data["n"] for i in ids] == list(range(10))


def test_a_batch_that_fails_after_others_reports_what_was_created(client: Client) -> None:
    tasks = [new_task("ok", priority="low") for _ in range(BATCH_LIMIT)] + [{"type": "nope"}]
    with pytest.raises(PartialBatchError) as caught:
        client.create_many(tasks)
    assert len(caught.value.ids) == BATCH_LIMIT
    assert isinstance(caught.value.error, ValidationError)
    assert "tasks.0.type" in caught.value.error.fields


def test_list_follows_the_cursors(client: Client) -> None:
    ids = client.create_many([new_task("listed", {"n": n}, priority="low") for n in range(250)])
    listed = list(client.list(type="listed", page_size=100))
    assert [task.id for task in listed] == ids[::-1]  # newest first, across three pages
    assert [t.id for t in client.list(type="listed", state="available", priority="low")][:1] == [
        ids[-1]
    ]
    assert list(client.list(type="listed", state="completed")) == []


def test_cancel_retry_and_a_conflict(client: Client) -> None:
    task = client.create("ok", priority="low")
    cancelled = client.cancel(task.id)
    assert cancelled.state == "cancelled" and cancelled.finished
    with pytest.raises(ConflictError) as caught:
        client.cancel(task.id)
    assert caught.value.status == 409 and "cancelled" in caught.value.message
    assert client.retry(task.id).state == "available"


def test_api_errors_are_typed_with_the_apis_message_and_fields(client: Client) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.get(2**62)
    assert missing.value.message == f"task {2**62} does not exist"
    assert missing.value.request_id
    with pytest.raises(ValidationError) as invalid:
        client.create("nope", priority="urgent")
    assert set(invalid.value.fields) == {"type", "priority"}
    assert "priority" in str(invalid.value)
    with pytest.raises(ValidationError) as batch:
        client.create_many([new_task("ok"), new_task("ok", max_attempts=0)])
    assert list(batch.value.fields) == ["tasks.1.max_attempts"]


def test_wait_returns_the_task_once_final(client: Client) -> None:
    done = client.wait(client.create("ok", priority="high").id, timeout=30)
    assert done.state == "completed" and done.succeeded and done.finished_at is not None
    failed = client.wait(client.create("boom", priority="high", max_attempts=1).id, timeout=30)
    assert failed.state == "failed" and not failed.succeeded
    assert failed.last_error is not None and "boom" in failed.last_error


def test_wait_times_out_with_the_task_as_it_is(client: Client) -> None:
    task = client.create("ok", priority="low")  # no low worker: it stays available
    with pytest.raises(WaitTimeoutError) as caught:
        client.wait(task.id, timeout=0.5)
    assert caught.value.task.state == "available" and caught.value.task.id == task.id
    with pytest.raises(ValueError, match="timeout"):
        client.wait(task.id, timeout=-1)


def test_a_token_is_sent_as_a_bearer(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path, workers=False, api={"tokens": ["s3cret"]}) as stack:
        with Client(stack.url, max_retries=0) as anonymous, pytest.raises(AuthenticationError):
            anonymous.get(1)
        with Client(stack.url, token="s3cret") as client:
            assert client.create("ok").state == "available"


# --- the retry path, against a failing proxy -----------------------------------------------------


def test_a_connection_lost_before_the_api_saw_the_create_is_retried(api_stack: Stack) -> None:
    with FlakyProxy(api_stack.url, [DROP]) as proxy, Client(proxy.url) as client:
        task = client.create("ok", {"marker": "drop-before"}, priority="low")
    assert len(proxy.seen) == 2
    assert (
        proxy.seen[0].idempotency_key
        and proxy.seen[0].idempotency_key == proxy.seen[1].idempotency_key
    )
    assert _count(api_stack, "drop-before") == 1 and task.data == {"marker": "drop-before"}


def test_a_503_is_retried_with_the_same_idempotency_key(api_stack: Stack) -> None:
    with FlakyProxy(api_stack.url, [UNAVAILABLE, UNAVAILABLE]) as proxy, Client(proxy.url) as c:
        task = c.create("ok", {"marker": "after-503"}, priority="low")
        keys = {seen.idempotency_key for seen in proxy.seen}
        assert len(proxy.seen) == 3 and len(keys) == 1 and None not in keys
        c.create("ok", priority="low")  # the next create gets a key of its own
        assert proxy.seen[3].idempotency_key not in keys
    assert _count(api_stack, "after-503") == 1 and task.state == "available"


def test_a_create_whose_answer_was_lost_makes_one_task(api_stack: Stack) -> None:
    with FlakyProxy(api_stack.url, [FORWARD_THEN_DROP]) as proxy, Client(proxy.url) as client:
        task = client.create("ok", {"marker": "answer-lost"}, priority="low")
    assert len(proxy.seen) == 2 and proxy.seen[0].idempotency_key == proxy.seen[1].idempotency_key
    assert _count(api_stack, "answer-lost") == 1 and task.data == {"marker": "answer-lost"}


def test_when_the_retries_run_out_the_last_error_is_raised(api_stack: Stack) -> None:
    faults = [UNAVAILABLE] * 3
    with FlakyProxy(api_stack.url, faults) as proxy, Client(proxy.url, max_retries=1) as client:
        with pytest.raises(UnavailableError) as caught:
            client.get(1)
        assert caught.value.message == "flaky: unavailable" and len(proxy.seen) == 2
    nowhere = Client(f"http://127.0.0.1:{free_port()}", max_retries=1)
    with nowhere, pytest.raises(APIConnectionError, match="ConnectError"):
        nowhere.get(1)


def test_a_cancel_whose_answer_was_lost_is_not_sent_again(api_stack: Stack) -> None:
    with Client(api_stack.url) as direct:
        task = direct.create("ok", priority="low")
        with FlakyProxy(api_stack.url, [FORWARD_THEN_DROP]) as proxy, Client(proxy.url) as client:
            with pytest.raises(APIConnectionError):
                client.cancel(task.id)
            assert len(proxy.seen) == 1  # a second cancel would answer 409 for a done cancel
        assert direct.get(task.id).state == "cancelled"
