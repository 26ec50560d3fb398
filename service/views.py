"""The HTTP handlers: parse the request, call db.py, serialize. Errors are raised, not answered."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from aiohttp import hdrs, web
from marshmallow import ValidationError
from prometheus_client import CONTENT_TYPE_LATEST

from asynctask.core import db
from asynctask.core.connections import acquire
from asynctask.core.errors import DatabaseUnavailable, TaskNotFound
from asynctask.core.models import Priority, State
from asynctask.service import keys
from asynctask.service.openapi import BODY_ERRORS, LOCATION, body, operation, query, text_operation
from asynctask.service.render import json_text, page_text, task_text
from asynctask.service.rules import (
    MAX_BIGINT,
    TOO_DEEP_TO_PARSE,
    MalformedRequest,
    ValidationFailed,
)
from asynctask.service.schemas import (
    CURSOR_PATTERN,
    BatchCreatedSchema,
    HealthSchema,
    StatsSchema,
    TaskBatchSchema,
    TaskCreateSchema,
    TaskListQuerySchema,
    TaskPageSchema,
    TaskSchema,
)

log = logging.getLogger("asynctask.api")

# /ready answers 503 when `SELECT 1` takes longer than this: a load balancer's probe is patient
# for a few seconds at most, and a slower database is as good as none for new requests.
READY_TIMEOUT_SECONDS = 2.0
_CURSOR = re.compile(CURSOR_PATTERN)
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_LIST_QUERY = TaskListQuerySchema()


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON and which jsonb refuses.
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request) -> Any:
    """The request body parsed as JSON; 413 past client_max_size (raised by aiohttp), else 400.

    A body nested too deep for the parser is valid JSON that breaks the depth rule: a 422.
    """
    raw = await request.read()
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ValidationFailed({"_schema": [TOO_DEEP_TO_PARSE]}) from None
    except ValueError as exc:
        reason = exc.args[0] if exc.args else "cannot be parsed"
        raise MalformedRequest(f"Request body is not valid JSON: {reason}") from None


def _task_id(request: web.Request) -> int:
    # The route only matches digits; beyond bigint no task can exist, so it is a 404 too.
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


@operation("Create a task", (201, TaskSchema, "The new task."), BODY_ERRORS, headers=LOCATION)
@body(TaskCreateSchema)
async def create_task(request: web.Request) -> web.Response:
    """POST /api/tasks: insert one task (and NOTIFY its priority), committed before the 201."""
    task = request.app[keys.RULES].one(await read_json(request))
    row = await request.app[keys.CREATES].create(task)
    request.app[keys.METRICS].tasks_created((task.priority,))
    headers = {"Location": f"/api/tasks/{row['id']}"}
    return json_text(task_text(row, task.data_json), status=201, headers=headers)


@operation(
    "Create up to 10,000 tasks at once", (201, BatchCreatedSchema, "Ids in order."), BODY_ERRORS
)
@body(TaskBatchSchema)
async def create_tasks(request: web.Request) -> web.Response:
    """POST /api/tasks/batch: validate every item, then insert all in one statement."""
    tasks = request.app[keys.RULES].batch(await read_json(request))
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        ids = await db.insert_tasks(conn, [task.row() for task in tasks])
    request.app[keys.METRICS].tasks_created(task.priority for task in tasks)
    return web.json_response({"ids": ids}, status=201)


@operation("One task", (200, TaskSchema, "The task."), (404, 503), path_id=True)
async def get_task(request: web.Request) -> web.Response:
    """GET /api/tasks/{id}."""
    task_id = _task_id(request)
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        row = await db.get_task(conn, task_id)
    return json_text(task_text(row))


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
        rows = await db.list_tasks(
            conn,
            limit=limit + 1,
            state=State(query["state"]) if "state" in query else None,
            priority=Priority(priority) if priority else None,
            type_=query.get("type"),
            before_id=before_id,
        )
    next_cursor = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    return json_text(page_text(rows[:limit], next_cursor))


def _flat(messages: dict[str, Any]) -> dict[str, list[str]]:
    return {key: [str(m) for m in value] for key, value in messages.items()}


@operation("Cancel a task", (200, TaskSchema, "Cancelled."), (404, 409, 503), path_id=True)
async def cancel_task(request: web.Request) -> web.Response:
    """POST /api/tasks/{id}/cancel: only an available or retrying task; else 409."""
    task_id = _task_id(request)
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        row = await db.cancel_task(conn, task_id)
    return json_text(task_text(row))


@operation("Retry a task", (200, TaskSchema, "Available again."), (404, 409, 503), path_id=True)
async def retry_task(request: web.Request) -> web.Response:
    """POST /api/tasks/{id}/retry: only a failed or cancelled task; else 409."""
    task_id = _task_id(request)
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        row = await db.retry_task(conn, task_id)
    return json_text(task_text(row))


@operation("Liveness", (200, HealthSchema, "The process answers."), (), tags=("probes",))
async def health(request: web.Request) -> web.Response:
    """GET /health: the process answers; no database access."""
    return web.json_response({"status": "ok"})


@operation(
    "Readiness",
    (200, HealthSchema, "The database answers."),
    (503,),
    tags=("probes",),
    unavailable=HealthSchema,
)
async def ready(request: web.Request) -> web.Response:
    """GET /ready: 200 when the database answers `SELECT 1` in time, else 503."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with acquire(request.app[keys.POOL], READY_TIMEOUT_SECONDS) as conn:
                await db.ping(conn)
    except (DatabaseUnavailable, TimeoutError):
        message = f"The database did not answer SELECT 1 within {READY_TIMEOUT_SECONDS:g} s."
        return web.json_response({"status": "unavailable", "error": message}, status=503)
    return web.json_response({"status": "ok"})


@operation(
    "Queue statistics (cached for a couple of seconds)",
    (200, StatsSchema, "Counts by priority and state, queue lag, the last minute's outcomes."),
    (503,),
    tags=("operations",),
)
async def get_stats(request: web.Request) -> web.Response:
    """GET /api/stats: the cached snapshot as JSON; 503 when the database does not answer."""
    snapshot = await request.app[keys.STATS].get()
    return web.json_response(snapshot.as_json())


@text_operation(
    "Prometheus metrics",
    "Prometheus text format; the task gauges are absent while asynctask_database_up is 0.",
    tags=("probes",),
)
async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics: always 200; without the database, the HTTP metrics and database_up 0."""
    # Refresh the snapshot the collector reads; a failure shows as asynctask_database_up 0, never
    # a 5xx: a scrape that fails loses the HTTP metrics too, just when they matter.
    try:
        await request.app[keys.STATS].get()
    except DatabaseUnavailable:
        pass
    except Exception:  # e.g. no tasks table yet (not migrated): worth a log line, not a 500
        log.exception("GET /metrics: the statistics query failed")
    body = request.app[keys.METRICS].exposition()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})
