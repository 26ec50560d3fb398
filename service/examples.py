"""Examples for the OpenAPI document, so Swagger UI's "Try it out" shows real requests and answers.

One story runs through them: a monthly report task, created, retried once after a mail server
refused it, then completed. The validation errors are produced by the rules the API runs
(service/rules.py, the list query's schema) against the configured task types, so they read
exactly as the API would answer; tests/test_openapi.py checks every example against its schema
and replays the error examples against a running app.
"""

from __future__ import annotations

import json
from typing import Any, Final

from marshmallow import ValidationError

from asynctask.core.config import Config
from asynctask.core.errors import InvalidTransition, TaskNotFound
from asynctask.core.models import CANCELLABLE_STATES, RETRYABLE_STATES, State
from asynctask.service import dashboard_examples
from asynctask.service.rules import TaskRules, ValidationFailed
from asynctask.service.task_schemas import TaskListQuerySchema

TASK_ID: Final = 42
# The requests behind the error examples (tests send them and compare the answers).
MALFORMED_BODY: Final = '{"type": "report", "data": {"month": "2024-05"}'
INVALID_TASK: Final = {"type": "reprot", "priority": "urgent", "max_attempts": 0}
INVALID_QUERY: Final = {"state": "done", "limit": "5000"}
_LAST_ERROR: Final = "\n".join(
    [
        "ConnectionRefusedError: [Errno 111] Connection refused",
        "Traceback (most recent call last, last frames):",
        '  File "/app/myapp/reports.py", line 41, in report',
        "    mail(pdf, to=task.data['email'])",
    ]
)


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


def _created(task_type: str) -> dict[str, Any]:
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


def _stats() -> dict[str, Any]:
    def counts(available: int, running: int, completed: int, failed: int) -> dict[str, int]:
        return {
            "scheduled": 2 if available else 0,
            "available": available,
            "running": running,
            "retrying": 1 if running else 0,
            "completed": completed,
            "failed": failed,
            "cancelled": 0,
        }

    return {
        "counts": {
            "high": counts(12, 4, 18204, 3),
            "normal": counts(0, 1, 5120, 0),
            "low": counts(37, 0, 0, 0),
        },
        "queue_lag_seconds": {"high": 0.8, "normal": 0.0, "low": 1260.4},
        "last_minute": {"completed": 1187, "failed": 1},
        "workers": {"high": 4, "normal": 2, "low": 0},
        "due_without_workers": ["low"],
        **dashboard_examples.overview(),
    }


def schema_examples(config: Config) -> dict[str, Any]:
    """An example per component schema of the document, by its name."""
    task_type = _task_type(config)
    stats = _stats()
    # The task before it, whose first attempt failed the same way: due again 1 s later.
    retrying = task(
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
    return {
        "TaskCreate": {
            "type": task_type,
            "priority": "high",
            "max_attempts": 5,
            "data": {"month": "2024-05", "email": "finance@example.com"},
        },
        "TaskBatch": {
            "tasks": [
                {"type": task_type, "data": {"month": "2024-04"}},
                {"type": task_type, "priority": "low", "data": {"month": "2024-05"}},
            ]
        },
        "BatchCreated": {"ids": [TASK_ID + 1, TASK_ID + 2], "duplicates": []},
        "Task": task(task_type, State.COMPLETED),
        # `next_cursor` passed back as `cursor` gives the tasks before id 41 (base 36: "15").
        "TaskPage": {"tasks": [task(task_type, State.COMPLETED), retrying], "next_cursor": "15"},
        "Error": _invalid_task(config),
        "Health": {"status": "ok"},
        "Stats": stats,
        "PriorityCounts": stats["counts"],
        "StateCounts": stats["counts"]["high"],
        "QueueLag": stats["queue_lag_seconds"],
        "LastMinute": stats["last_minute"],
        "LiveWorkers": stats["workers"],
        "TaskDetail": {**task(task_type, State.COMPLETED), "result": {"rows": 1284, "pages": 3}},
        "Schedule": _schedule(task_type),
        "ScheduleList": {"schedules": [_schedule(task_type)]},
        **dashboard_examples.schema_examples(stats),
    }


def _schedule(task_type: str) -> dict[str, Any]:
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


def response_examples(config: Config) -> dict[tuple[str, str, str], Any]:
    """An example per (path, method, status) whose answer differs from its schema's example."""
    task_type = _task_type(config)
    tasks, one = "/api/tasks", "/api/tasks/{id}"
    missing = _error(str(TaskNotFound(f"task {TASK_ID} does not exist")))
    examples: dict[tuple[str, str, str], Any] = {
        (tasks, "post", "201"): _created(task_type),
        (tasks, "post", "400"): _error(_malformed()),
        (tasks, "post", "422"): _invalid_task(config),
        ("/api/tasks/batch", "post", "400"): _error(_malformed()),
        ("/api/tasks/batch", "post", "422"): _invalid_batch(config),
        (tasks, "get", "422"): _invalid_query(),
        (one, "get", "404"): missing,
        # Cancelled while it waited for its second attempt.
        (one + "/cancel", "post", "200"): task(
            task_type,
            State.CANCELLED,
            attempts=1,
            updated_at="2024-06-03T09:15:02.903118+00:00",
            started_at="2024-06-03T09:15:02.483391+00:00",
            finished_at="2024-06-03T09:15:02.903118+00:00",
        ),
        (one + "/cancel", "post", "404"): missing,
        (one + "/cancel", "post", "409"): _error(
            str(InvalidTransition(TASK_ID, State.COMPLETED, CANCELLABLE_STATES))
        ),
        (one + "/retry", "post", "200"): task(
            task_type,
            State.AVAILABLE,
            attempts=0,
            scheduled_at="2024-06-03T10:02:17.004561+00:00",
            updated_at="2024-06-03T10:02:17.004561+00:00",
            started_at=None,
            finished_at=None,
        ),
        (one + "/retry", "post", "404"): missing,
        (one + "/retry", "post", "409"): _error(
            str(InvalidTransition(TASK_ID, State.RUNNING, RETRYABLE_STATES))
        ),
        ("/ready", "get", "503"): {
            "status": "unavailable",
            "error": "The database did not answer SELECT 1 within 2 s.",
        },
    }
    limit = config.api.max_body_bytes
    shared = {
        "401": _error("Missing or wrong bearer token."),
        "413": _error(f"Request body is larger than the limit of {limit} bytes."),
        "500": _error("Internal server error (request id 3f0c1e5a9b7d4e2f8a6c0b1d2e3f4a5b)."),
        "503": _error("The database is unavailable; try again."),
    }
    return {
        **{("*", "*", code): body for code, body in shared.items()},
        **examples,
        **dashboard_examples.response_examples(),
    }


def media_examples() -> dict[tuple[str, str], Any]:
    """Examples of the answers that are not JSON objects of a named schema, by (path, method)."""
    return {
        ("/metrics", "get"): "\n".join(
            [
                "# HELP asynctask_tasks Tasks in the table by state and priority.",
                "# TYPE asynctask_tasks gauge",
                'asynctask_tasks{priority="high",state="available"} 12.0',
                'asynctask_queue_lag_seconds{priority="high"} 0.8',
                'asynctask_workers{priority="high"} 4.0',
                "asynctask_database_up 1.0",
                "",
            ]
        ),
        ("/api/openapi", "get"): {
            "openapi": "3.0.3",
            "info": {"title": "asynctask", "version": "0.1.0"},
            "paths": {"/api/tasks": {"post": {"summary": "Create a task"}}},
        },
        ("/api/docs", "get"): "<!DOCTYPE html>\n<html>\n<head><title>Swagger UI</title>",
        ("/api/events", "get"): dashboard_examples.event(_stats()),
    }


def _task_type(config: Config) -> str:
    return "report" if "report" in config.task_types else config.task_types[0]


def _error(message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {"error": message} if fields is None else {"error": message, "fields": fields}


def _failure(rules: TaskRules, body: Any, batch: bool) -> dict[str, Any]:
    try:
        rules.batch(body) if batch else rules.one(body)
    except ValidationFailed as exc:
        return _error(str(exc), exc.fields)
    raise AssertionError(f"the example body {body!r} is valid")


def _invalid_task(config: Config) -> dict[str, Any]:
    rules = TaskRules.of(config)
    return _failure(rules, INVALID_TASK, batch=False)


def invalid_batch(config: Config) -> dict[str, Any]:
    """The batch behind the batch's 422 example: its second task breaks every rule it can."""
    return {"tasks": [{"type": _task_type(config)}, {**INVALID_TASK, "data": "2024-05"}]}


def _invalid_batch(config: Config) -> dict[str, Any]:
    rules = TaskRules.of(config)
    return _failure(rules, invalid_batch(config), batch=True)


def _invalid_query() -> dict[str, Any]:
    try:
        TaskListQuerySchema().load(INVALID_QUERY)
    except ValidationError as exc:
        fields = {key: [str(m) for m in messages] for key, messages in exc.messages_dict.items()}
        return _error("Invalid request.", fields)
    raise AssertionError(f"the example query {INVALID_QUERY!r} is valid")


def _malformed() -> str:
    try:
        json.loads(MALFORMED_BODY)
    except ValueError as exc:
        return f"Request body is not valid JSON: {exc}"
    raise AssertionError("the malformed example body parses")


def add_examples(document: dict[str, Any], config: Config) -> None:
    """Put an example on every component schema and on every answer that has its own."""
    schemas = document["components"]["schemas"]
    for name, example in schema_examples(config).items():
        schemas[name]["example"] = example
    answers = response_examples(config)
    others = media_examples()
    for path, operations in document["paths"].items():
        for method, spec in operations.items():
            for code, response in spec["responses"].items():
                content = response.get("content", {})
                if (path, method) in others and code == "200":
                    (media,) = content.values()
                    media["example"] = others[(path, method)]
                    continue
                body = answers.get((path, method, code), answers.get(("*", "*", code)))
                if body is not None and "application/json" in content:
                    content["application/json"]["example"] = body
