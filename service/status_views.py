"""The routes that report on the service itself: /health, /ready, /metrics and /api/stats.

Thin like every view, and none touches a task: the probes answer whether the process and the
database do, the statistics come from the cached snapshot (service/metrics.py reads the same one).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from asynctask.core import connections
from asynctask.core.connections import acquire
from asynctask.core.errors import DatabaseUnavailable
from asynctask.service import keys
from asynctask.service.openapi import operation, text_operation
from asynctask.service.status_schemas import HealthSchema, StatsSchema

log = logging.getLogger("asynctask.api")

# /ready answers 503 when `SELECT 1` takes longer than this: a load balancer's probe is patient
# for a few seconds at most, and a slower database is as good as none for new requests.
READY_TIMEOUT_SECONDS = 2.0


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
                await connections.ping(conn)
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
