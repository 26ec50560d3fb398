"""The tasks of the OpenAPI examples' story, as the API answers them (for service/examples.py).

One story runs through the examples: a monthly report task, created, retried once after a mail
server refused it, then completed; the task before it is still retrying, and a nightly schedule
enqueues another. Each function here is one of those records, at one point of the story.
"""

from __future__ import annotations

from typing import Any, Final

from asynctask.core.config import Config
from asynctask.core.models import State

TASK_ID: Final = 42
_LAST_ERROR: Final = "\n".join(
    [
        "ConnectionRefusedError: [Errno 111] Connection refused",
        "Traceback (most recent call last, last frames):",
        '  File "/app/myapp/reports.py", line 41, in report',
        "    mail(pdf, to=task.data['email'])",
    ]
)


def example_type(config: Config) -> str:
    """The task type of the story: `report` when configured, else the first configured type."""
    return "report" if "report" in config.task_types else config.task_types[0]


def task(task_type: str, state: State, **changes: Any) -> dict[str, Any]:
    """One task as the API answers it; by default the report of the story, completed."""
    example: dict[str, Any] = {
        "id": TASK_ID,
        "type": task_type,
        "priority": "high",
        "state": state.value,
        "attempts": 2,
        "max_attempts": 5,
        "data": {"month": "2024-05", "email": "finance@example.com"},
        "scheduled_at": "2024-06-03T09:15:03.512044+00:00",
        "inserted_at": "2024-06-03T09:15:02.481907+00:00",
        "updated_at": "2024-06-03T09:15:04.730215+00:00",
        "started_at": "2024-06-03T09:15:03.514210+00:00",
        "finished_at": "2024-06-03T09:15:04.730215+00:00",
        "last_error": _LAST_ERROR,
        "unique_key": None,
    }
    example.update(changes)
    return example


def created(task_type: str) -> dict[str, Any]:
    """The report just created: available, never attempted."""
    at = "2024-06-03T09:15:02.481907+00:00"
    return task(
        task_type,
        State.AVAILABLE,
        attempts=0,
        scheduled_at=at,
        updated_at=at,
        started_at=None,
        finished_at=None,
        last_error=None,
    )


def retrying(task_type: str) -> dict[str, Any]:
    """The task before the report, whose first attempt failed the same way: due again 1 s later."""
    return task(
        task_type,
        State.RETRYING,
        id=TASK_ID - 1,
        attempts=1,
        data={"month": "2024-04", "email": "finance@example.com"},
        scheduled_at="2024-06-03T09:14:59.931377+00:00",
        inserted_at="2024-06-03T09:14:58.117302+00:00",
        updated_at="2024-06-03T09:14:58.931377+00:00",
        started_at="2024-06-03T09:14:58.120954+00:00",
        finished_at=None,
    )


def cancelled(task_type: str) -> dict[str, Any]:
    """The report cancelled while it waited for its second attempt."""
    return task(
        task_type,
        State.CANCELLED,
        attempts=1,
        updated_at="2024-06-03T09:15:02.903118+00:00",
        started_at="2024-06-03T09:15:02.483391+00:00",
        finished_at="2024-06-03T09:15:02.903118+00:00",
    )


def retried(task_type: str) -> dict[str, Any]:
    """The report retried by hand: available again, its attempts reset."""
    return task(
        task_type,
        State.AVAILABLE,
        attempts=0,
        scheduled_at="2024-06-03T10:02:17.004561+00:00",
        updated_at="2024-06-03T10:02:17.004561+00:00",
        started_at=None,
        finished_at=None,
    )


def schedule(task_type: str) -> dict[str, Any]:
    """The nightly schedule of the story, which enqueued the task two before the report."""
    return {
        "name": "nightly-report",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "type": task_type,
        "priority": "low",
        "max_attempts": 5,
        "data": {"period": "day"},
        "catch_up": 1,
        "next_run_at": "2024-06-04T01:00:00+00:00",
        "last_run_at": "2024-06-03T01:00:00+00:00",
        "last_task_id": TASK_ID - 2,
    }
