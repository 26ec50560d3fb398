"""GET /api/schedules: the configured periodic tasks, each with its next and last run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from asynctask.core import periodic
from asynctask.core.connections import acquire
from asynctask.core.schedules import Schedule
from asynctask.service import keys
from asynctask.service.openapi import operation
from asynctask.service.schedule_schemas import ScheduleListSchema


@operation(
    "Periodic tasks, with their next and last runs",
    (200, ScheduleListSchema, "Every schedule of config.yaml, in its order."),
    (503,),
    tags=("schedules",),
)
async def list_schedules(request: web.Request) -> web.Response:
    """GET /api/schedules: each schedule, its next tick and the last tick it enqueued."""
    config = request.app[keys.CONFIG]
    states: dict[str, dict[str, Any]] = {}
    if config.schedules:
        timeout = config.database.connect_timeout_seconds
        async with acquire(request.app[keys.POOL], timeout) as conn:
            states = await periodic.schedule_states(conn, [s.name for s in config.schedules])
    now = datetime.now(UTC)
    shown = [_schedule(s, states.get(s.name), now) for s in config.schedules]
    return web.json_response({"schedules": shown})


def _schedule(schedule: Schedule, state: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    ran = state is not None and state["last_task_id"] is not None
    upcoming = schedule.next_tick(now)
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "type": schedule.type,
        "priority": schedule.priority.value,
        "max_attempts": schedule.max_attempts,
        "data": json.loads(schedule.data_json),
        "catch_up": schedule.catch_up,
        "next_run_at": None if upcoming is None else upcoming.isoformat(),
        "last_run_at": state["last_tick_at"].isoformat() if ran and state else None,
        "last_task_id": state["last_task_id"] if ran and state else None,
    }
