"""Client: the synchronous Python client of the asynctask API (httpx)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from asynctask.client import calls, retries
from asynctask.client.calls import Call, Settings
from asynctask.client.errors import APIError, PartialBatchError
from asynctask.client.records import TaskRecord
from asynctask.client.version import VERSION

T = TypeVar("T")


class Client:
    """Talks to a running asynctask API; one httpx connection pool, closed by `close()`.

    `base_url` and `token` default to ASYNCTASK_URL and ASYNCTASK_TOKEN (then
    http://127.0.0.1:4000, no token). A 503, a 502/504/408/429 or a lost connection is retried up
    to `max_retries` times with backoff; a create keeps its Idempotency-Key across them.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.settings = Settings.resolve(base_url, token, timeout, max_retries)
        self._http = http_client or httpx.Client()
        self._http.base_url = httpx.URL(self.settings.base_url)
        self._http.headers.update(self.settings.headers(VERSION))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def create(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        priority: str | None = None,
        max_attempts: int | None = None,
        scheduled_at: datetime | str | None = None,
        delay_seconds: float | None = None,
        unique_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> TaskRecord:
        """Create one task; `None` fields take the server's defaults."""
        task = calls.new_task(
            type,
            data,
            priority=priority,
            max_attempts=max_attempts,
            scheduled_at=scheduled_at,
            delay_seconds=delay_seconds,
            unique_key=unique_key,
        )
        return self._send(calls.create(task, idempotency_key))

    def create_many(
        self, tasks: Iterable[Mapping[str, Any]], *, batch_bytes: int = calls.BATCH_BYTES
    ) -> list[int]:
        """Create tasks given in the API's shape (see `new_task`), in batches; ids in order.

        Each batch is all or nothing; if one fails after others were committed, the error is a
        PartialBatchError holding the ids created so far.
        """
        ids: list[int] = []
        for group in calls.batches(tasks, max_bytes=batch_bytes):
            try:
                created = self._send(calls.batch(group))
            except APIError as exc:
                if ids:
                    raise PartialBatchError(ids, exc) from exc
                raise
            ids.extend(created)
        return ids

    def get(self, task_id: int) -> TaskRecord:
        """One task."""
        return self._send(calls.get(task_id))

    def list(
        self,
        *,
        state: str | None = None,
        priority: str | None = None,
        type: str | None = None,
        page_size: int = 100,
    ) -> Iterator[TaskRecord]:
        """Every task matching the filters, newest first, fetched a page at a time."""
        filters = {"state": state, "priority": priority, "type": type}
        cursor: str | None = None
        while True:
            tasks, cursor = self._send(calls.page(filters, cursor, page_size))
            yield from tasks
            if cursor is None:
                return

    def cancel(self, task_id: int) -> TaskRecord:
        """Cancel a task (the API answers 409 if its state does not allow it)."""
        return self._send(calls.change(task_id, "cancel"))

    def retry(self, task_id: int) -> TaskRecord:
        """Run a failed or cancelled task again, with its attempts from 0."""
        return self._send(calls.change(task_id, "retry"))

    def wait(self, task_id: int, timeout: float | None = None) -> TaskRecord:
        """The task once it is completed, failed or cancelled (the server long-polls).

        Raises WaitTimeoutError after `timeout` seconds (None: no limit).
        """
        loop = calls.WaitLoop(task_id, timeout)
        while True:
            task = self._send(loop.next_call())
            pause = loop.after(task)
            if pause is None:
                return task
            if pause:
                time.sleep(pause)

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(**call.request(self.settings))
            except httpx.TransportError as exc:
                delay = retries.retry_delay(call, attempt, self.settings, error=exc)
                if delay is None:
                    raise retries.connection_error(exc, self.settings) from exc
            else:
                delay = retries.retry_delay(call, attempt, self.settings, response=response)
                if delay is None:
                    return call.parse(response)
            attempt += 1
            time.sleep(delay)
