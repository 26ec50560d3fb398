"""What the API accepts as a new task: one definition, used by the single and the batch create.

Plain Python, not marshmallow: marshmallow needs ~20 µs per item and the batch route must take
50,000 tasks/s. service/create_schemas.py describes the same rules (built from the same
constants) for the OpenAPI document; tests check both agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from asynctask.core.checks import MAX_INT32
from asynctask.core.config import Config
from asynctask.core.errors import AsyncTaskError
from asynctask.core.models import DEFAULT_PRIORITY, PRIORITIES, UNIQUE_KEY_MAX, Priority
from asynctask.core.task_rows import NewRow
from asynctask.service.datetimes import parse_datetime

MAX_BIGINT: Final = 2**63 - 1
BATCH_MAX: Final = 10_000
TASK_FIELDS: Final = frozenset(
    {"type", "priority", "max_attempts", "data", "scheduled_at", "delay_seconds", "unique_key"}
)
# Ten years (of 365.25 days): far enough for any plan, near enough to be a plan.
MAX_DELAY_SECONDS: Final = 315_576_000
# Deeper data is refused (422): every reader of a task, in any language, must be able to decode
# it, and Python's own decoder gives up near 1,000 levels, less on a deep stack.
MAX_DATA_DEPTH: Final = 64
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
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
TOO_DEEP: Final = f"Must not be nested deeper than {MAX_DATA_DEPTH} levels."
TOO_DEEP_TO_PARSE: Final = (
    f"The body is nested too deeply to parse; task data may nest at most {MAX_DATA_DEPTH} levels."
)
ATTEMPTS_RANGE: Final = f"Must be greater than or equal to 1 and less than or equal to {MAX_INT32}."
BATCH_LENGTH: Final = f"Length must be between 1 and {BATCH_MAX}."
DELAY_RANGE: Final = f"Must be a number from 0 to {MAX_DELAY_SECONDS} (seconds: ten years)."
NOT_BOTH: Final = "Give scheduled_at or delay_seconds, not both."
UNIQUE_KEY_LENGTH: Final = f"Length must be between 1 and {UNIQUE_KEY_MAX}."
# What _data_json answers instead of JSON text (none of them is JSON).
_DATA_PROBLEMS: Final = frozenset({NOT_OBJECT, TOO_DEEP, NOT_FINITE, NUL_OR_SURROGATE})


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
    """A validated task to insert; `data_json` is `data` as JSON text (the insert's input).

    `scheduled_at` is ISO 8601 text with an offset; it and `delay_seconds` are never both set.
    """

    type: str
    priority: Priority
    max_attempts: int
    data_json: str
    scheduled_at: str | None = None
    delay_seconds: float | None = None
    unique_key: str | None = None

    def row(self) -> NewRow:
        """The task as task_rows.py and creates.py take it."""
        return NewRow(
            self.type,
            self.priority.number,
            self.max_attempts,
            self.data_json,
            self.scheduled_at,
            self.delay_seconds,
            self.unique_key,
        )


def too_large(limit: int) -> str:
    """The message for data above api.max_data_bytes."""
    return f"Must be at most {limit} bytes as JSON (api.max_data_bytes)."


@dataclass(frozen=True)
class TaskRules:
    """The rules for a new task, bound to one configuration's types, attempts and data limit."""

    task_types: tuple[str, ...]
    default_max_attempts: int
    max_data_bytes: int

    @classmethod
    def of(cls, config: Config) -> TaskRules:
        """The rules of one configuration."""
        return cls(config.task_types, config.max_attempts, config.api.max_data_bytes)

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
        priority = item.get("priority", DEFAULT_PRIORITY.value)
        if type(priority) is not str or priority not in PRIORITIES:
            errors[f"{prefix}priority"] = [one_of(PRIORITIES)]
        attempts = _attempts(item.get("max_attempts", self.default_max_attempts))
        if isinstance(attempts, str):
            errors[f"{prefix}max_attempts"] = [attempts]
        data_json = _data_json(item.get("data", {}))
        if data_json in _DATA_PROBLEMS:
            errors[f"{prefix}data"] = [data_json]
        elif _utf8_length(data_json) > self.max_data_bytes:
            errors[f"{prefix}data"] = [too_large(self.max_data_bytes)]
        when = _when(item, prefix, errors)
        unique_key = item.get("unique_key")
        if unique_key is not None and (problem := _unique_key_problem(unique_key)):
            errors[f"{prefix}unique_key"] = [problem]
        if errors:
            return None, errors
        # No errors: type_ is one of the str types and attempts an int.
        assert isinstance(type_, str) and isinstance(attempts, int)
        return NewTask(type_, Priority(priority), attempts, data_json, *when, unique_key), {}

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


def _data_json(data: Any) -> str:
    """`data` as compact JSON text, or one of _DATA_PROBLEMS."""
    if type(data) is not dict:
        return NOT_OBJECT
    if too_deep(data, MAX_DATA_DEPTH):
        return TOO_DEEP
    if not data:
        return "{}"
    try:
        # Python reads 1e400 as inf, which json.dumps would write as Infinity: not JSON.
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return NOT_FINITE
    return text if _storable(text) else NUL_OR_SURROGATE


def _when(
    item: dict[str, Any], prefix: str, errors: dict[str, list[str]]
) -> tuple[str | None, float | None]:
    """(scheduled_at as ISO 8601 text, delay_seconds); problems go into `errors`."""
    at, delay = item.get("scheduled_at"), item.get("delay_seconds")
    if "scheduled_at" in item and "delay_seconds" in item:
        errors[f"{prefix}scheduled_at"] = errors[f"{prefix}delay_seconds"] = [NOT_BOTH]
        return None, None
    if at is not None:
        parsed = parse_datetime(at)
        if isinstance(parsed, str):
            errors[f"{prefix}scheduled_at"] = [parsed]
            return None, None
        return parsed.isoformat(), None
    if delay is not None:
        if type(delay) not in (int, float) or not 0 <= delay <= MAX_DELAY_SECONDS:
            errors[f"{prefix}delay_seconds"] = [DELAY_RANGE]
            return None, None
        return None, float(delay)
    return None, None


def _unique_key_problem(value: Any) -> str | None:
    if type(value) is not str:
        return NOT_STRING
    if not 1 <= len(value) <= UNIQUE_KEY_MAX:
        return UNIQUE_KEY_LENGTH
    if "\x00" in value:
        return NUL_OR_SURROGATE
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return NUL_OR_SURROGATE
    return None


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


def _utf8_length(text: str) -> int:
    # Called after _storable: no lone surrogates, so the encode cannot fail.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def too_deep(data: dict[str, Any], limit: int) -> bool:
    """True if containers nest deeper than `limit` (the object itself is level 1); no recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False
