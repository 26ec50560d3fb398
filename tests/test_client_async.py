"""asynctask.AsyncClient: the same calls as Client, awaited, against the real API and workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asynctask import AsyncClient
from asynctask.client import (
    ConflictError,
    NotFoundError,
    PartialBatchError,
    ValidationError,
    WaitTimeoutError,
    new_task,
)
from tests.api_server import Stack
from tests.flaky_server import DROP, UNAVAILABLE, FlakyProxy


@pytest.fixture
async def client(api_stack: Stack) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(api_stack.url) as client:
        yield client


async def test_create_get_cancel_retry(client: AsyncClient) -> None:
    task = await client.create("ok", {"a": 1}, priority="low", max_attempts=2)
    assert (task.state, task.data, task.max_attempts) == ("available", {"a": 1}, 2)
    assert await client.get(task.id) == task
    assert (await client.cancel(task.id)).state == "cancelled"
    with pytest.raises(ConflictError):
        await client.cancel(task.id)
    assert (await client.retry(task.id)).state == "available"
    with pytest.raises(NotFoundError):
        await client.get(2**62)


async def test_create_many_and_list(client: AsyncClient) -> None:
    ids = await client.create_many(
        [new_task("listed_async", {"n": n}, priority="low") for n in range(150)]
    )
    assert len(ids) == 150 and ids == sorted(ids)
    listed = [task.id async for task in client.list(type="listed_async", page_size=60)]
    assert listed == ids[::-1]
    with pytest.raises(ValidationError) as caught:
        await client.create_many([new_task("ok"), {"type": "ok", "priority": "urgent"}])
    assert list(caught.value.fields) == ["tasks.1.priority"]
    tasks = [new_task("ok", priority="low") for _ in range(3)] + [{"type": "nope"}]
    with pytest.raises(PartialBatchError) as partial:
        await client.create_many(tasks, batch_bytes=40)  # one task per batch
    assert len(partial.value.ids) == 3


async def test_wait(client: AsyncClient) -> None:
    done = await client.wait((await client.create("ok", priority="high")).id, timeout=30)
    assert done.state == "completed"
    waiting = await client.create("ok", priority="low")
    with pytest.raises(WaitTimeoutError):
        await client.wait(waiting.id, timeout=0.3)


async def test_retries_keep_the_idempotency_key(api_stack: Stack) -> None:
    with FlakyProxy(api_stack.url, [DROP, UNAVAILABLE]) as proxy:
        async with AsyncClient(proxy.url) as client:
            task = await client.create("ok", {"marker": "async"}, priority="low")
    keys = {seen.idempotency_key for seen in proxy.seen}
    assert len(proxy.seen) == 3 and len(keys) == 1 and task.data == {"marker": "async"}
