"""Examples for the OpenAPI document, so Swagger UI's "Try it out" shows real requests and answers.

This module puts them on the document: an example per component schema, and per answer that has
its own. Their pieces tell one story (service/task_examples.py: a monthly report task, retried
once, then completed), with the errors the API would answer (service/error_examples.py) and the
dashboard's answers (service/dashboard_examples.py); tests/test_openapi.py checks every example
against its schema.
"""

from __future__ import annotations

from typing import Any

from asynctask.core.config import Config
from asynctask.core.errors import InvalidTransition, TaskNotFound
from asynctask.core.models import CANCELLABLE_STATES, RETRYABLE_STATES, State
from asynctask.service import dashboard_examples
from asynctask.service.error_examples import (
    error,
    invalid_batch_answer,
    invalid_query_answer,
    invalid_task_answer,
    malformed_message,
    shared_errors,
)
from asynctask.service.task_examples import (
    TASK_ID,
    cancelled,
    created,
    example_type,
    retried,
    retrying,
    schedule,
    task,
)

_TASKS = "/api/tasks"
_BATCH = "/api/tasks/batch"
_ONE = "/api/tasks/{id}"


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
    task_type = example_type(config)
    stats = _stats()
    return {
        **_task_schema_examples(task_type),
        "Error": invalid_task_answer(config),
        "Health": {"status": "ok"},
        "Stats": stats,
        "PriorityCounts": stats["counts"],
        "StateCounts": stats["counts"]["high"],
        "QueueLag": stats["queue_lag_seconds"],
        "LastMinute": stats["last_minute"],
        "LiveWorkers": stats["workers"],
        "TaskDetail": {**task(task_type, State.COMPLETED), "result": {"rows": 1284, "pages": 3}},
        "Schedule": schedule(task_type),
        "ScheduleList": {"schedules": [schedule(task_type)]},
        **dashboard_examples.schema_examples(stats),
    }


def _task_schema_examples(task_type: str) -> dict[str, Any]:
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
        "TaskPage": {
            "tasks": [task(task_type, State.COMPLETED), retrying(task_type)],
            "next_cursor": "15",
        },
    }


def response_examples(config: Config) -> dict[tuple[str, str, str], Any]:
    """An example per (path, method, status) whose answer differs from its schema's example."""
    return {
        **{("*", "*", code): body for code, body in shared_errors(config).items()},
        **_create_and_list_answers(config),
        **_one_task_answers(example_type(config)),
        ("/ready", "get", "503"): {
            "status": "unavailable",
            "error": "The database did not answer SELECT 1 within 2 s.",
        },
        **dashboard_examples.response_examples(),
    }


def _create_and_list_answers(config: Config) -> dict[tuple[str, str, str], Any]:
    return {
        (_TASKS, "post", "201"): created(example_type(config)),
        (_TASKS, "post", "400"): error(malformed_message()),
        (_TASKS, "post", "422"): invalid_task_answer(config),
        (_BATCH, "post", "400"): error(malformed_message()),
        (_BATCH, "post", "422"): invalid_batch_answer(config),
        (_TASKS, "get", "422"): invalid_query_answer(),
    }


def _one_task_answers(task_type: str) -> dict[tuple[str, str, str], Any]:
    missing = error(str(TaskNotFound(f"task {TASK_ID} does not exist")))
    return {
        (_ONE, "get", "404"): missing,
        (_ONE + "/cancel", "post", "200"): cancelled(task_type),
        (_ONE + "/cancel", "post", "404"): missing,
        (_ONE + "/cancel", "post", "409"): error(
            str(InvalidTransition(TASK_ID, State.COMPLETED, CANCELLABLE_STATES))
        ),
        (_ONE + "/retry", "post", "200"): retried(task_type),
        (_ONE + "/retry", "post", "404"): missing,
        (_ONE + "/retry", "post", "409"): error(
            str(InvalidTransition(TASK_ID, State.RUNNING, RETRYABLE_STATES))
        ),
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
