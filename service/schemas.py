"""What the API accepts and returns: the validation rules (one definition) and marshmallow schemas.

`TaskRules` is the one definition of a valid new task; the single and the batch create both use it,
because marshmallow needs ~20 µs per item and the batch route must take 50,000 tasks/s. The
marshmallow schemas below describe the same rules (built from the same constants) for the OpenAPI
document and parse the list route's query string; tests check both agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from marshmallow import RAISE, Schema, fields, validate

from asynctask.core.config import MAX_INT32
from asynctask.core.errors import AsyncTaskError
from asynctask.core.models import PRIORITY_NUMBERS, STATES

PRIORITIES: Final = tuple(PRIORITY_NUMBERS)  # high, normal, low
DEFAULT_PRIORITY: Final = "normal"
MAX_BIGINT: Final = 2**63 - 1
BATCH_MAX: Final = 10_000
LIST_LIMIT_MAX: Final = 1000
LIST_LIMIT_DEFAULT: Final = 100
TASK_FIELDS: Final = frozenset({"type", "priority", "max_attempts", "data"})
# Handler names as config.py allows them; also keeps NUL bytes out of the list filter's SQL.
TYPE_PATTERN: Final = r"^[A-Za-z0-9_.\-]{1,100}$"
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# A page cursor is an id in base 36; 13 digits reach past the largest bigint.
CURSOR_PATTERN: Final = r"^[0-9a-z]{1,13}$"
# Errors of one batch answer: enough to fix a client, not a 10,000-entry body.
MAX_REPORTED_ERRORS: Final = 100

# Messages in marshmallow's wording, so body and query errors read alike.
MISSING: Final = "Missing data for required field."
UNKNOWN: Final = "Unknown field."
NOT_OBJECT: Final = "Must be a JSON object."
NOT_INTEGER: Final = "Not a valid integer."
NOT_STRING: Final = "Not a valid string."
NUL_OR_SURROGATE: Final = (
    "Must not contain \\u0000 or unpaired surrogates (jsonb cannot store them)."
)
NOT_FINITE: Final = "Numbers must fit a double: a literal such as 1e400 overflows to infinity."
ATTEMPTS_RANGE: Final = f"Must be greater than or equal to 1 and less than or equal to {MAX_INT32}."
BATCH_LENGTH: Final = f"Length must be between 1 and {BATCH_MAX}."


def one_of(choices: tuple[str, ...]) -> str:
    """The message for a value outside a fixed set; it lists the accepted values."""
    return "Must be one of: " + ", ".join(choices) + "."


class ValidationFailed(AsyncTaskError):
    """The request is well-formed JSON but breaks a rule: answered 422, naming each field."""

    def __init__(self, fields: dict[str, list[str]], message: str = "Invalid request.") -> None:
        self.fields = fields
        super().__init__(message)


class MalformedRequest(AsyncTaskError):
    """The body is not JSON at all: answered 400."""


class NewTask(NamedTuple):
    """A validated task to insert; `data_json` is `data` as JSON text (the batch insert's input)."""

    type: str
    priority: int
    max_attempts: int
    data: dict[str, Any]
    data_json: str

    def columns(self) -> tuple[str, int, int, str]:
        """(type, priority, max_attempts, data as JSON text): one row of db.insert_tasks."""
        return self.type, self.priority, self.max_attempts, self.data_json


@dataclass(frozen=True)
class TaskRules:
    """The rules for a new task, bound to one configuration's types and default attempts."""

    task_types: tuple[str, ...]
    default_max_attempts: int

    def task(self, item: Any, prefix: str = "") -> tuple[NewTask | None, dict[str, list[str]]]:
        """Validate one task object: (the task, {}) or (None, {field: [messages]})."""
        if type(item) is not dict:
            return None, {prefix.rstrip(".") or "_schema": [NOT_OBJECT]}
        errors: dict[str, list[str]] = {}
        for key in item.keys() - TASK_FIELDS:
            errors[f"{prefix}{key}"] = [UNKNOWN]
        type_ = item.get("type")
        if type_ is None:
            errors[f"{prefix}type"] = [MISSING]
        elif type(type_) is not str or type_ not in self.task_types:
            errors[f"{prefix}type"] = [one_of(self.task_types)]
        priority = item.get("priority", DEFAULT_PRIORITY)
        if type(priority) is not str or priority not in PRIORITY_NUMBERS:
            errors[f"{prefix}priority"] = [one_of(PRIORITIES)]
        attempts = _attempts(item.get("max_attempts", self.default_max_attempts))
        if isinstance(attempts, str):
            errors[f"{prefix}max_attempts"] = [attempts]
        data = item.get("data", {})
        data_json = "{}"
        if type(data) is not dict:
            errors[f"{prefix}data"] = [NOT_OBJECT]
        elif data:
            try:
                # Python reads 1e400 as inf, which json.dumps would write as Infinity: not JSON.
                data_json = json.dumps(
                    data, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                )
            except ValueError:
                errors[f"{prefix}data"] = [NOT_FINITE]
            else:
                if not _storable(data_json):
                    errors[f"{prefix}data"] = [NUL_OR_SURROGATE]
        if errors:
            return None, errors
        # No errors: type_ is one of the str types and attempts an int.
        assert isinstance(type_, str) and isinstance(attempts, int)
        return NewTask(type_, PRIORITY_NUMBERS[priority], attempts, data, data_json), {}

    def one(self, body: Any) -> NewTask:
        """The body of POST /api/tasks as a NewTask, or ValidationFailed."""
        task, errors = self.task(body)
        if task is None:
            raise ValidationFailed(errors)
        return task

    def batch(self, body: Any) -> list[NewTask]:
        """The body of POST /api/tasks/batch, all or nothing; errors name tasks.<index>.<field>."""
        if type(body) is not dict:
            raise ValidationFailed({"_schema": [NOT_OBJECT]})
        errors = {key: [UNKNOWN] for key in body if key != "tasks"}
        items: Any = body.get("tasks")
        if items is None:
            errors["tasks"] = [MISSING]
        elif type(items) is not list:
            errors["tasks"] = ["Not a valid list."]
        elif not 1 <= len(items) <= BATCH_MAX:
            errors["tasks"] = [BATCH_LENGTH]
        if errors:
            raise ValidationFailed(errors)
        tasks = []
        for index, item in enumerate(items):
            task, item_errors = self.task(item, f"tasks.{index}.")
            if task is None:
                errors.update(item_errors)
                if len(errors) >= MAX_REPORTED_ERRORS:
                    break
            else:
                tasks.append(task)
        if errors:
            raise ValidationFailed(errors, "Invalid request: no task was inserted.")
        return tasks


def _attempts(value: Any) -> int | str:
    # JSON Schema counts 3.0 as an integer, so it is accepted; 1.5, true and "3" are not.
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        return NOT_INTEGER
    return value if 1 <= value <= MAX_INT32 else ATTEMPTS_RANGE


def _storable(text: str) -> bool:
    # jsonb rejects \u0000 and libpq cannot encode a lone surrogate: both would be a 500 later.
    # json.dumps writes NUL as \u0000; an escaped backslash before "u0000" is not a NUL.
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- marshmallow: the OpenAPI document's shapes, and the list query parser ----------------------


class StrictSchema(Schema):
    """Unknown fields are errors (and the document says additionalProperties: false)."""

    class Meta:
        unknown = RAISE


class TaskCreateSchema(StrictSchema):
    """A new task. The `type` enum is the configured handlers, filled in per app."""

    type = fields.String(required=True, metadata={"description": "A configured task type."})
    priority = fields.String(
        load_default=DEFAULT_PRIORITY,
        validate=validate.OneOf(PRIORITIES),
        metadata={"default": DEFAULT_PRIORITY},
    )
    max_attempts = fields.Integer(
        strict=True,
        validate=validate.Range(1, MAX_INT32),
        metadata={"description": "Default: the server's max_attempts setting."},
    )
    data = fields.Dict(
        load_default=dict,
        metadata={
            "default": {},
            "description": "Any JSON object; its strings may not contain \\u0000 (jsonb cannot).",
        },
    )


class TaskBatchSchema(StrictSchema):
    """Up to 10,000 new tasks, inserted together or not at all."""

    tasks = fields.List(
        fields.Nested(TaskCreateSchema), required=True, validate=validate.Length(1, BATCH_MAX)
    )


class BatchCreatedSchema(Schema):
    """The ids of a batch, in request order."""

    ids = fields.List(fields.Integer(), required=True)


class TaskSchema(Schema):
    """A task as the API returns it."""

    id = fields.Integer(required=True, metadata={"format": "int64"})
    type = fields.String(required=True)
    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    attempts = fields.Integer(required=True)
    max_attempts = fields.Integer(required=True)
    data = fields.Dict(required=True)
    scheduled_at = fields.DateTime(required=True)
    inserted_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    started_at = fields.DateTime(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)


class TaskPageSchema(Schema):
    """One page of tasks, newest first; pass `next_cursor` as `cursor` for the next page."""

    tasks = fields.List(fields.Nested(TaskSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class TaskListQuerySchema(StrictSchema):
    """The filters and page of GET /api/tasks."""

    state = fields.String(validate=validate.OneOf(STATES))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    type = fields.String(validate=validate.Regexp(TYPE_PATTERN))
    limit = fields.Integer(
        load_default=LIST_LIMIT_DEFAULT,
        validate=validate.Range(1, LIST_LIMIT_MAX),
        metadata={"default": LIST_LIMIT_DEFAULT},
    )
    cursor = fields.String(
        validate=validate.Regexp(CURSOR_PATTERN),
        metadata={"description": "`next_cursor` of the previous page (opaque)."},
    )


class ErrorSchema(Schema):
    """Every error: a message, and for 422 the offending fields."""

    error = fields.String(required=True)
    fields_ = fields.Dict(
        data_key="fields", keys=fields.String(), values=fields.List(fields.String())
    )


class HealthSchema(Schema):
    """The answer of /health and /ready."""

    status = fields.String(required=True)
    error = fields.String()


def task_json(row: dict[str, Any]) -> dict[str, Any]:
    """A task row from db.py as JSON-ready data: timestamps in ISO 8601, null when unknown."""
    for key in ("scheduled_at", "inserted_at", "updated_at", "started_at", "finished_at"):
        value = row[key]
        if value is not None:
            row[key] = value.isoformat()
    return row
