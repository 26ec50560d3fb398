"""The routes of existing tasks: read one (long-polls with wait_seconds), list them, cancel, retry.

Thin like every view: parse the request, call core/, serialize. Errors are raised, not answered:
the middlewares answer them. The list's page cursors (opaque base-36 ids) are made here too.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aiohttp import web
from marshmallow import ValidationError

from asynctask.core import task_rows
from asynctask.core.connections import acquire
from asynctask.core.errors import TaskNotFound
from asynctask.core.models import Priority, State
from asynctask.service import keys
from asynctask.service.openapi import (
    RETRY_CONFLICT,
    WAIT_MAX_SECONDS,
    WAIT_SECONDS,
    operation,
    query,
)
from asynctask.service.render import json_text, page_text, task_text
from asynctask.service.rules import MAX_BIGINT, ValidationFailed
from asynctask.service.task_schemas import (
    CURSOR_PATTERN,
    TaskDetailSchema,
    TaskListQuerySchema,
    TaskPageSchema,
    TaskSchema,
)

_CURSOR = re.compile(CURSOR_PATTERN)
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_LIST_QUERY = TaskListQuerySchema()


def _task_id(request: web.Request) -> int:
    # The route only matches 1 to 19 digits; beyond bigint no task can exist, so a 404 too.
    task_id = int(request.match_info["id"])
    if task_id > MAX_BIGINT:
        raise TaskNotFound(f"task {task_id} does not exist")
    return task_id


def _timeout(request: web.Request) -> float:
    return request.app[keys.CONFIG].database.connect_timeout_seconds


def encode_cursor(last_id: int) -> str:
    """An opaque page cursor (the last id seen, in base 36)."""
    digits = ""
    while last_id:
        last_id, digit = divmod(last_id, 36)
        digits = _BASE36[digit] + digits
    return digits or "0"


def decode_cursor(cursor: str) -> int | None:
    """The id a page ends before (None: no bound), or ValidationFailed naming `cursor`.

    Every string the document's pattern allows is a valid cursor, so a client (or a fuzzer)
    that follows the schema is never refused.
    """
    if not _CURSOR.fullmatch(cursor):
        raise ValidationFailed({"cursor": [f"Must match {CURSOR_PATTERN} (a next_cursor)."]})
    value = int(cursor, 36)
    return value if value <= MAX_BIGINT else None


@operation(
    "One task, with its result; with wait_seconds, once it is final (or after that long)",
    (200, TaskDetailSchema, "The task: final, or as it is when wait_seconds ran out."),
    (404, 422, 503),
    path_id=True,
    parameters=(WAIT_SECONDS,),
)
async def get_task(request: web.Request) -> web.Response:
    """GET /api/tasks/{id}[?wait_seconds=N]: long-polls up to N s for a final state."""
    task_id = _task_id(request)
    wait = _wait_seconds(request)

    async def read() -> dict[str, Any]:
        # A pool connection for the read alone: a waiter holds none while it sleeps.
        async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
            return await task_rows.get_task(conn, task_id)

    if wait > 0:
        row = await request.app[keys.WAITERS].until_finished(task_id, wait, read)
    else:
        row = await read()
    return json_text(task_text(row))


def _wait_seconds(request: web.Request) -> float:
    # 0 to 60 is the API's contract; api.max_wait_seconds (an operator's cap, e.g. under a
    # proxy's idle timeout) shortens the wait instead of refusing it: the client just asks again.
    raw = request.query.get("wait_seconds")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= WAIT_MAX_SECONDS:  # NaN fails too
        message = f"Must be a number from 0 to {WAIT_MAX_SECONDS}."
        raise ValidationFailed({"wait_seconds": [message]})
    return min(value, request.app[keys.CONFIG].api.max_wait_seconds)


@operation("List tasks, newest first", (200, TaskPageSchema, "One page."), (422, 503))
@query(TaskListQuerySchema)
async def list_tasks(request: web.Request) -> web.Response:
    """GET /api/tasks: filtered, newest first, one page per request."""
    try:
        query = _LIST_QUERY.load(dict(request.query))
    except ValidationError as exc:
        raise ValidationFailed(_flat(exc.messages_dict)) from None
    before_id = decode_cursor(query["cursor"]) if "cursor" in query else None
    priority = query.get("priority")
    limit = query["limit"]
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        # One extra row tells whether another page exists, so the last page has no cursor.
        rows = await task_rows.list_tasks(
            conn,
            limit=limit + 1,
            state=State(query["state"]) if "state" in query else None,
            priority=Priority(priority) if priority else None,
            type_=query.get("type"),
            before_id=before_id,
            max_bytes=request.app[keys.CONFIG].api.max_page_bytes,
        )
    # A row without data is past the byte budget: the page ends before it, with a cursor.
    page = [row for row in rows[:limit] if row["data"] is not None]
    next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > len(page) else None
    return json_text(page_text(page, next_cursor))


def _flat(messages: dict[str, Any]) -> dict[str, list[str]]:
    return {key: [str(m) for m in value] for key, value in messages.items()}


@operation(
    "Cancel a task",
    (200, TaskSchema, "Cancelled (it was available, scheduled or retrying)."),
    (404, 409, 503),
    path_id=True,
    also=(
        (
            202,
            TaskSchema,
            "It was running: cancelled; its worker stops a coroutine handler, and discards what a"
            " plain function returns or raises.",
            {},
        ),
    ),
)
async def cancel_task(request: web.Request) -> web.Response:
    """POST /api/tasks/{id}/cancel: scheduled, available, retrying, or running (202); else 409."""
    task_id = _task_id(request)
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        row = await task_rows.cancel_task(conn, task_id)
    status = 202 if row.pop("was") == "running" else 200
    return json_text(task_text(row), status=status)


@operation(
    "Retry a task",
    (200, TaskSchema, "Available again."),
    (404, 409, 503),
    path_id=True,
    descriptions={409: RETRY_CONFLICT},
)
async def retry_task(request: web.Request) -> web.Response:
    """POST /api/tasks/{id}/retry: only a failed or cancelled task whose unique_key is free."""
    task_id = _task_id(request)
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        row = await task_rows.retry_task(conn, task_id)
    return json_text(task_text(row))
