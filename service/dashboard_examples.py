"""Examples of the dashboard's answers for the OpenAPI document (service/examples.py adds them).

The same story as the task examples: a busy morning, one host with seven workers, the low
priority paused for a deploy, and a second host that died and whose task was rescued.
"""

from __future__ import annotations

import json
from typing import Any, Final

from asynctask.core.heartbeats import DEAD_AFTER_SECONDS, HEARTBEAT_SECONDS

NOW: Final = "2024-06-03T09:15:05.104233+00:00"
_PAUSED_AT: Final = "2024-06-03T08:58:41.220374+00:00"


def _minute(minute: str, seconds: float, created: int, completed: int) -> dict[str, Any]:
    return {
        "minute": minute,
        "seconds": seconds,
        "created": created,
        "completed": completed,
        "failed": 0,
        "retrying": 1 if created > completed else 0,
        "created_per_second": round(created / seconds, 3),
        "completed_per_second": round(completed / seconds, 3),
    }


def queues() -> dict[str, Any]:
    """Every priority's pause flag: low paused."""
    return {
        "high": {"priority": "high", "paused": False, "since": None},
        "normal": {"priority": "normal", "paused": False, "since": None},
        "low": {"priority": "low", "paused": True, "since": _PAUSED_AT},
    }


def overview() -> dict[str, Any]:
    """The dashboard's part of the stats: rates, pauses, supervisors, types, the time."""
    return {
        "per_minute": [
            _minute("2024-06-03T09:13:00+00:00", 60.0, 1204, 1198),
            _minute("2024-06-03T09:14:00+00:00", 60.0, 1187, 1190),
            _minute("2024-06-03T09:15:00+00:00", 5.104, 101, 98),
        ],
        "last_hour": {"created": 70412, "completed": 70288, "failed": 3, "retrying": 41},
        "paused": queues(),
        "supervisors": {"alive": 1, "dead": 1, "slots": 7, "busy": 3},
        "types": ["report", "send_email"],
        "generated_at": NOW,
    }


def _slot(slot: str, pid: int, status: str, task_id: int | None = None) -> dict[str, Any]:
    return {
        "slot": slot,
        "priority": slot.split("_")[0],
        "pid": pid,
        "status": status,
        "task_id": task_id,
        "up_since": "2024-06-03T06:00:12.048113+00:00",
        "restarts": 1 if slot == "high_2" else 0,
        "last_heartbeat": "2024-06-03T09:15:04.011850+00:00",
        "alive": True,
    }


def workers() -> dict[str, Any]:
    """GET /api/workers: one live supervisor with a busy slot, one dead and rescued."""
    alive = {
        "host": "worker-a",
        "pid": 4211,
        "alive": True,
        "up_since": "2024-06-03T06:00:11.902114+00:00",
        "last_heartbeat": "2024-06-03T09:15:04.011850+00:00",
        "rescued_at": None,
        "slots": [_slot("high_1", 4215, "busy", 42), _slot("low_1", 4221, "paused")],
    }
    dead_slot = {
        **_slot("high_1", 977, "busy", 40),
        "last_heartbeat": "2024-06-03T09:02:10.553719+00:00",
        "alive": False,
    }
    dead = {
        "host": "worker-b",
        "pid": 951,
        "alive": False,
        "up_since": "2024-06-02T22:41:07.330981+00:00",
        "last_heartbeat": "2024-06-03T09:02:10.553719+00:00",
        "rescued_at": "2024-06-03T09:02:16.007125+00:00",
        "slots": [dead_slot],
    }
    return {
        "now": NOW,
        "heartbeat_seconds": HEARTBEAT_SECONDS,
        "dead_after_seconds": DEAD_AFTER_SECONDS,
        "supervisors": [alive, dead],
    }


def schema_examples(stats: dict[str, Any]) -> dict[str, Any]:
    """An example per dashboard schema, by its name; `stats` is the full Stats example."""
    listed = workers()
    return {
        "Minute": stats["per_minute"][-1],
        "LastHour": stats["last_hour"],
        "Queue": queues()["low"],
        "Paused": queues(),
        "QueueList": {"queues": list(queues().values())},
        "WorkersSummary": stats["supervisors"],
        "WorkerSlot": listed["supervisors"][0]["slots"][0],
        "Supervisor": listed["supervisors"][0],
        "Workers": listed,
        "BulkCancel": {"state": "retrying", "type": "report", "dry_run": True},
        "BulkRetry": {"state": "failed", "priority": "high", "dry_run": False},
        "BulkResult": {"action": "retry", "dry_run": False, "states": ["failed"], "count": 3},
        "Session": {
            "auth_required": True,
            "role": "admin",
            "via": "cookie",
            "expires_at": "2024-06-03T21:15:05+00:00",
        },
        "Login": {"token": "the token from api.tokens"},
    }


def response_examples() -> dict[tuple[str, str, str], Any]:
    """Answers that differ from their schema's example, by (path, method, status)."""
    pause = "/api/queues/{priority}/pause"
    return {
        (pause, "post", "200"): queues()["low"],
        ("/api/queues/{priority}/resume", "post", "200"): {
            "priority": "low",
            "paused": False,
            "since": NOW,
        },
        ("/api/session", "get", "200"): {
            "auth_required": True,
            "role": None,
            "via": None,
            "expires_at": None,
        },
        ("/api/session", "delete", "200"): {
            "auth_required": True,
            "role": None,
            "via": None,
            "expires_at": None,
        },
    }


def event(stats: dict[str, Any]) -> dict[str, Any]:
    """One event of GET /api/events, field by field: the stats object as its data."""
    return {"event": "stats", "id": "1", "data": json.dumps(stats)}
