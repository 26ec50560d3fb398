"""The dashboard's JSON routes: queues (pause, resume), workers, bulk actions, the event stream.

Thin like task_views.py: parse, call the core, serialize; errors are raised and the middlewares
answer them. Documented in OpenAPI by the same decorators, and for people in docs/dashboard-api.md.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import hdrs, web

from asynctask.core import heartbeats, queues
from asynctask.core.bulk import BULK_CANCELLABLE, BulkFilter, count_bulk, run_bulk
from asynctask.core.connections import acquire
from asynctask.core.models import PRIORITIES, RETRYABLE_STATES, Priority
from asynctask.service import keys
from asynctask.service.dashboard_schemas import (
    BulkCancelSchema,
    BulkResultSchema,
    BulkRetrySchema,
    QueueListSchema,
    WorkersSchema,
    load,
)
from asynctask.service.events import RETRY_MILLISECONDS, snapshot_event
from asynctask.service.openapi import BODY_ERRORS, body, operation, text_operation
from asynctask.service.status_schemas import QueueSchema

PRIORITY_PATH = "{priority:high|normal|low}"
_PRIORITY = {
    "in": "path",
    "name": "priority",
    "required": True,
    "schema": {"type": "string", "enum": list(PRIORITIES)},
}
_NO_PRIORITY = {404: "No such priority (high, normal or low)."}
_BULK_CANCEL = BulkCancelSchema()
_BULK_RETRY = BulkRetrySchema()


def _timeout(request: web.Request) -> float:
    return request.app[keys.CONFIG].database.connect_timeout_seconds


@operation("Every priority: paused or not, since when", (200, QueueListSchema, "High first."),
           (503,), tags=("queues",))  # fmt: skip
async def get_queues(request: web.Request) -> web.Response:
    """GET /api/queues."""
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        states = await queues.queue_states(conn)
    return web.json_response({"queues": [state.as_json() for state in states.values()]})


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    priority = Priority(request.match_info["priority"])
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        state = await queues.set_paused(conn, priority, paused)
    return web.json_response(state.as_json())


@operation("Pause a priority: its workers stop claiming within a second (persisted)",
           (200, QueueSchema, "Paused (pausing twice changes nothing)."), (404, 503),
           tags=("queues",), parameters=(_PRIORITY,), descriptions=_NO_PRIORITY)  # fmt: skip
async def pause_queue(request: web.Request) -> web.Response:
    """POST /api/queues/{priority}/pause."""
    return await _set_paused(request, True)


@operation("Resume a paused priority: its workers claim again at once",
           (200, QueueSchema, "Running."), (404, 503),
           tags=("queues",), parameters=(_PRIORITY,), descriptions=_NO_PRIORITY)  # fmt: skip
async def resume_queue(request: web.Request) -> web.Response:
    """POST /api/queues/{priority}/resume."""
    return await _set_paused(request, False)


@operation("Every supervisor on every host and its worker slots (the registry)",
           (200, WorkersSchema, "Supervisors by host and pid."), (503,),
           tags=("workers",))  # fmt: skip
async def get_workers(request: web.Request) -> web.Response:
    """GET /api/workers: the registry grouped by supervisor, alive or dead by heartbeat age."""
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        found = await heartbeats.list_workers(conn)
    supervisors: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in found:
        supervisors.setdefault((row["host"], row["supervisor_pid"]), []).append(row)
    now = found[0]["now"] if found else None
    return web.json_response(
        {
            "now": (now or await _database_now(request)).isoformat(),
            "heartbeat_seconds": heartbeats.HEARTBEAT_SECONDS,
            "dead_after_seconds": heartbeats.DEAD_AFTER_SECONDS,
            "supervisors": [_supervisor(*key, slots) for key, slots in supervisors.items()],
        }
    )


async def _database_now(request: web.Request) -> Any:
    snapshot = await request.app[keys.STATS].get()
    return snapshot.generated_at


def _supervisor(host: str, pid: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    rescued = [r["rescued_at"] for r in rows if r["rescued_at"] is not None]
    return {
        "host": host,
        "pid": pid,
        "alive": any(r["alive"] for r in rows),
        "up_since": min(r["first_started_at"] for r in rows).isoformat(),
        "last_heartbeat": max(r["heartbeat_at"] for r in rows).isoformat(),
        "rescued_at": max(rescued).isoformat() if rescued else None,
        "slots": [
            {
                "slot": r["slot"],
                "priority": r["priority"],
                "pid": r["pid"],
                "status": r["status"],
                "task_id": r["task_id"],
                "up_since": r["started_at"].isoformat(),
                "restarts": r["restarts"],
                "last_heartbeat": r["heartbeat_at"].isoformat(),
                "alive": r["alive"],
            }
            for r in rows
        ],
    }


async def _bulk(request: web.Request, action: str) -> web.Response:
    cancel = action == "cancel"
    schema = _BULK_CANCEL if cancel else _BULK_RETRY
    allowed = BULK_CANCELLABLE if cancel else RETRYABLE_STATES
    given = await request.app[keys.BODIES].load(request, lambda body: load(schema, body))
    chosen = BulkFilter.of(given, allowed)
    async with acquire(request.app[keys.POOL], _timeout(request)) as conn:
        if given["dry_run"]:
            count = await count_bulk(conn, chosen)
        else:
            count = await run_bulk(conn, action, chosen)
    return web.json_response(
        {"action": action, "dry_run": given["dry_run"], "states": chosen.states, "count": count}
    )


@operation("Cancel every task matching a filter, in one statement (dry_run: count them)",
           (200, BulkResultSchema, "How many matched (dry run) or were cancelled."),
           BODY_ERRORS, tags=("bulk",))  # fmt: skip
@body(BulkCancelSchema)
async def bulk_cancel(request: web.Request) -> web.Response:
    """POST /api/tasks/bulk/cancel: scheduled, available and retrying tasks (not running ones)."""
    return await _bulk(request, "cancel")


@operation("Retry every task matching a filter, in one statement (dry_run: count them)",
           (200, BulkResultSchema, "How many matched (dry run) or were made available."),
           (*BODY_ERRORS, 409), tags=("bulk",))  # fmt: skip
@body(BulkRetrySchema)
async def bulk_retry(request: web.Request) -> web.Response:
    """POST /api/tasks/bulk/retry: only failed and cancelled tasks can be retried."""
    return await _bulk(request, "retry")


def wants_stream(request: web.Request) -> bool:
    """True when the client asked for a stream (EventSource sends Accept: text/event-stream)."""
    return "text/event-stream" in request.headers.get(hdrs.ACCEPT, "")


@text_operation(
    "The overview, live: Server-Sent Events (with Accept: text/event-stream)",
    "`event: stats` once a second, its data the body of GET /api/stats (`id` counts refreshes);"
    " `event: unavailable` with {error} while the database is away. Without Accept:"
    " text/event-stream, the current event alone.",
    tags=("operations",),
    media_type="text/event-stream",
    schema={
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": ["stats", "unavailable"]},
            "data": {"type": "string", "description": "JSON: a Stats object, or {error}."},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    },
)
async def events(request: web.Request) -> web.StreamResponse:
    """GET /api/events: the overview as Server-Sent Events, one per second while connected.

    A client that does not accept text/event-stream gets the current event alone.
    """
    headers = {
        hdrs.CONTENT_TYPE: "text/event-stream",
        hdrs.CACHE_CONTROL: "no-cache",
        "X-Accel-Buffering": "no",  # nginx: pass each event on at once
    }
    response = web.StreamResponse(headers=headers)
    broadcaster = request.app[keys.EVENTS]
    if not wants_stream(request):
        first = await snapshot_event(request.app[keys.STATS])
        await response.prepare(request)
        await response.write(first)
        await response.write_eof()
        return response
    await response.prepare(request)
    # A viewer that closes its page is gone for good: end its stream quietly.
    with contextlib.suppress(ConnectionResetError):
        await response.write(f"retry: {RETRY_MILLISECONDS}\n\n".encode())
        async with broadcaster.listen() as stream:
            async for event in stream:
                await response.write(event)
    return response
