"""The half of the client that does no I/O, shared by Client and AsyncClient.

Each API operation is built here as a Call: the request to send (its body encoded once, so a
retry sends the same bytes with the same Idempotency-Key) and how to read its answer. The
wait-for-result loop lives here too, and the retry policy in retries.py, so the sync and async
clients differ only in how they send and sleep.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from asynctask.client.errors import APIError, WaitTimeoutError, status_error
from asynctask.client.records import TaskRecord

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:4000"
BATCH_LIMIT = 10_000  # POST /api/tasks/batch takes at most this many tasks
BATCH_BYTES = 1_000_000  # under the server's default api.max_body_bytes (1 MiB)
WAIT_MAX_SECONDS = 60.0  # the longest wait_seconds the API accepts
DUPLICATE_HEADER = "X-Asynctask-Duplicate"


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the API is and how to talk to it (arguments, else the environment)."""

    base_url: str
    token: str | None
    timeout: float
    max_retries: int

    @staticmethod
    def resolve(
        base_url: str | None, token: str | None, timeout: float, max_retries: int
    ) -> Settings:
        """Arguments win; then ASYNCTASK_URL / ASYNCTASK_TOKEN; then the local default API."""
        url = base_url or os.environ.get("ASYNCTASK_URL") or DEFAULT_URL
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        return Settings(
            base_url=url.rstrip("/"),
            token=token or os.environ.get("ASYNCTASK_TOKEN") or None,
            timeout=timeout,
            max_retries=max_retries,
        )

    def headers(self, version: str) -> dict[str, str]:
        """Headers for every request."""
        headers = {"User-Agent": f"asynctask-python/{version}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def http_timeout(self, read: float | None = None) -> httpx.Timeout:
        """`timeout` per read (`read` if longer: a long-poll) or write; at most 5 s to connect."""
        return httpx.Timeout(
            self.timeout, connect=min(5.0, self.timeout), read=max(read or 0.0, self.timeout)
        )


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    content: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # A GET, or a POST the server deduplicates by its Idempotency-Key: safe to send again after
    # a connection broke mid-request, when it may or may not have reached the server.
    replay_safe: bool = False
    read_timeout: float | None = None  # a long-poll waits longer than the default timeout

    def request(self, settings: Settings) -> dict[str, Any]:
        """Keyword arguments for httpx's `request`."""
        headers = dict(self.headers)
        if self.content is not None:
            headers["Content-Type"] = "application/json"
        timeout = settings.http_timeout(self.read_timeout)
        return {
            "method": self.method,
            "url": self.path,
            "content": self.content,
            "params": self.params or None,
            "headers": headers,
            "timeout": timeout,
        }


# --- reading answers ----------------------------------------------------------------------------


def decoded(response: httpx.Response) -> Any:
    """The JSON body of a successful answer; a typed APIStatusError for an error answer."""
    if response.status_code >= 400:
        raise _error(response)
    try:
        return response.json()
    except ValueError as exc:
        raise APIError(
            f"the API answered {response.status_code} with a body that is not JSON"
        ) from exc


def _error(response: httpx.Response) -> APIError:
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    else:
        message = response.text.strip()[:200] or response.reason_phrase or "error"
    return status_error(response.status_code, message, body, response.headers.get("X-Request-Id"))


def _task(response: httpx.Response) -> TaskRecord:
    duplicate = response.headers.get(DUPLICATE_HEADER, "").lower() not in ("", "0", "false")
    return TaskRecord.from_json(decoded(response), deduplicated=duplicate)


def _ids(response: httpx.Response) -> list[int]:
    return [int(i) for i in decoded(response)["ids"]]


def _page(response: httpx.Response) -> tuple[list[TaskRecord], str | None]:
    body = decoded(response)
    return [TaskRecord.from_json(raw) for raw in body["tasks"]], body.get("next_cursor")


# --- building calls -----------------------------------------------------------------------------


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no timezone: pass an aware datetime")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def new_task(
    type: str,
    data: Mapping[str, Any] | None = None,
    *,
    priority: str | None = None,
    max_attempts: int | None = None,
    scheduled_at: datetime | str | None = None,
    delay_seconds: float | None = None,
    unique_key: str | None = None,
) -> dict[str, Any]:
    """A new task in the API's shape; fields left None take the server's defaults."""
    fields = {
        "type": type,
        "data": None if data is None else dict(data),
        "priority": priority,
        "max_attempts": max_attempts,
        "scheduled_at": scheduled_at,
        "delay_seconds": delay_seconds,
        "unique_key": unique_key,
    }
    return {key: value for key, value in fields.items() if value is not None}


def create(task: dict[str, Any], idempotency_key: str | None = None) -> Call[TaskRecord]:
    """POST /api/tasks with a fresh Idempotency-Key (kept across this call's retries)."""
    key = idempotency_key or uuid.uuid4().hex
    return Call(
        "POST",
        "/api/tasks",
        _task,
        content=_encode(task),
        headers={"Idempotency-Key": key},
        replay_safe=True,
    )


def batch(encoded: list[bytes]) -> Call[list[int]]:
    """POST /api/tasks/batch for tasks already encoded one by one."""
    return Call(
        "POST",
        "/api/tasks/batch",
        _ids,
        content=b'{"tasks":[' + b",".join(encoded) + b"]}",
        headers={"Idempotency-Key": uuid.uuid4().hex},
        replay_safe=True,
    )


def batches(
    tasks: Iterable[Mapping[str, Any]], limit: int = BATCH_LIMIT, max_bytes: int = BATCH_BYTES
) -> Iterator[list[bytes]]:
    """Encoded tasks in groups of at most `limit` and about `max_bytes` (a larger task alone)."""
    group: list[bytes] = []
    size = 0
    for task in tasks:
        encoded = _encode(dict(task))
        if group and (len(group) >= limit or size + len(encoded) + 1 > max_bytes):
            yield group
            group, size = [], 0
        group.append(encoded)
        size += len(encoded) + 1
    if group:
        yield group


def get(task_id: int, wait_seconds: float | None = None) -> Call[TaskRecord]:
    """GET /api/tasks/{id}, long-polling up to `wait_seconds` for a final state."""
    if not wait_seconds:
        return Call("GET", f"/api/tasks/{int(task_id)}", _task, replay_safe=True)
    return Call(
        "GET",
        f"/api/tasks/{int(task_id)}",
        _task,
        params={"wait_seconds": f"{wait_seconds:.3f}"},
        replay_safe=True,
        read_timeout=wait_seconds + 10.0,
    )


def page(
    filters: Mapping[str, str | None], cursor: str | None, limit: int
) -> Call[tuple[list[TaskRecord], str | None]]:
    """GET /api/tasks: one page, newest first."""
    params = {key: value for key, value in filters.items() if value is not None}
    params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/api/tasks", _page, params=params, replay_safe=True)


def change(task_id: int, action: str) -> Call[TaskRecord]:
    """POST /api/tasks/{id}/cancel or /retry (not replayed once sent: a second one may be a 409)."""
    return Call("POST", f"/api/tasks/{int(task_id)}/{action}", _task)


# --- waiting for a final state ------------------------------------------------------------------


class WaitLoop:
    """The steps of wait(): long-polls of at most 60 s each until a final state or the deadline."""

    def __init__(self, task_id: int, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be 0 or more (None: wait as long as it takes)")
        self.task_id = task_id
        self.timeout = timeout
        self.deadline: float | None = None if timeout is None else time.monotonic() + timeout
        self._asked = 0.0
        self._sent = 0.0

    def next_call(self) -> Call[TaskRecord]:
        """The next long-poll, asking for what is left of the timeout (60 s at most)."""
        left = WAIT_MAX_SECONDS if self.deadline is None else self.deadline - time.monotonic()
        self._asked = max(0.0, min(WAIT_MAX_SECONDS, left))
        self._sent = time.monotonic()
        return get(self.task_id, self._asked)

    def after(self, task: TaskRecord) -> float | None:
        """None when `task` is final; else seconds to pause before the next call.

        Raises WaitTimeoutError once the deadline has passed.
        """
        if task.finished:
            return None
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise WaitTimeoutError(task, self.timeout or 0.0)
        # Not final, and back at once though seconds were asked: a server that does not
        # long-poll (or one shutting down). Pause a little rather than asking again at once.
        if self._asked > 1.0 and now - self._sent < 0.5:
            left: float = math.inf if self.deadline is None else self.deadline - now
            return min(1.0, left)
        return 0.0
