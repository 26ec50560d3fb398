"""The error answers of the OpenAPI examples, and the requests behind them.

The validation errors are produced by the rules the API runs (service/rules.py, the list query's
schema) against the configured task types, so they read exactly as the API would answer;
tests/test_openapi.py sends the requests here to a running app and compares its answers.
"""

from __future__ import annotations

import json
from typing import Any, Final

from marshmallow import ValidationError

from asynctask.core.config import Config
from asynctask.service.rules import TaskRules, ValidationFailed
from asynctask.service.task_examples import example_type
from asynctask.service.task_schemas import TaskListQuerySchema

# The requests behind the error examples (tests send them and compare the answers).
MALFORMED_BODY: Final = '{"type": "report", "data": {"month": "2024-05"}'
INVALID_TASK: Final = {"type": "reprot", "priority": "urgent", "max_attempts": 0}
INVALID_QUERY: Final = {"state": "done", "limit": "5000"}


def error(message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """An error answer: its message, and the offending fields when there are any."""
    return {"error": message} if fields is None else {"error": message, "fields": fields}


def shared_errors(config: Config) -> dict[str, dict[str, Any]]:
    """The answers any route may give, by status: the same whatever the route."""
    limit = config.api.max_body_bytes
    return {
        "401": error("Missing or wrong bearer token."),
        "413": error(f"Request body is larger than the limit of {limit} bytes."),
        "500": error("Internal server error (request id 3f0c1e5a9b7d4e2f8a6c0b1d2e3f4a5b)."),
        "503": error("The database is unavailable; try again."),
    }


def _failure(rules: TaskRules, body: Any, batch: bool) -> dict[str, Any]:
    try:
        rules.batch(body) if batch else rules.one(body)
    except ValidationFailed as exc:
        return error(str(exc), exc.fields)
    raise AssertionError(f"the example body {body!r} is valid")


def invalid_task_answer(config: Config) -> dict[str, Any]:
    """The 422 of POST /api/tasks with INVALID_TASK."""
    rules = TaskRules.of(config)
    return _failure(rules, INVALID_TASK, batch=False)


def invalid_batch(config: Config) -> dict[str, Any]:
    """The batch behind the batch's 422 example: its second task breaks every rule it can."""
    return {"tasks": [{"type": example_type(config)}, {**INVALID_TASK, "data": "2024-05"}]}


def invalid_batch_answer(config: Config) -> dict[str, Any]:
    """The 422 of POST /api/tasks/batch with invalid_batch(config)."""
    rules = TaskRules.of(config)
    return _failure(rules, invalid_batch(config), batch=True)


def invalid_query_answer() -> dict[str, Any]:
    """The 422 of GET /api/tasks with INVALID_QUERY."""
    try:
        TaskListQuerySchema().load(INVALID_QUERY)
    except ValidationError as exc:
        fields = {key: [str(m) for m in messages] for key, messages in exc.messages_dict.items()}
        return error("Invalid request.", fields)
    raise AssertionError(f"the example query {INVALID_QUERY!r} is valid")


def malformed_message() -> str:
    """The message of the 400 that MALFORMED_BODY gets (the JSON parser's own words)."""
    try:
        json.loads(MALFORMED_BODY)
    except ValueError as exc:
        return f"Request body is not valid JSON: {exc}"
    raise AssertionError("the malformed example body parses")
