"""The shapes of the OpenAPI document (marshmallow), and the parser of the list route's query.

They describe what service/rules.py enforces, built from the same constants; tests check that the
two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from asynctask.core.checks import MAX_INT32
from asynctask.core.models import (
    DEFAULT_PRIORITY,
    PRIORITIES,
    STATES,
    TYPE_PATTERN,
    UNIQUE_KEY_MAX,
)
from asynctask.core.stats import CHART_MINUTES, LAST_MINUTE_STATES, SERIES_STATES
from asynctask.service.datetimes import parse_datetime
from asynctask.service.rules import (
    BATCH_MAX,
    DELAY_RANGE,
    MAX_DATA_DEPTH,
    MAX_DELAY_SECONDS,
    NOT_BOTH,
)

WORKER_SUMMARY: Final = ("alive", "dead", "slots", "busy")
LIST_LIMIT_MAX: Final = 1000
LIST_LIMIT_DEFAULT: Final = 100
# A page cursor is an id in base 36; 13 digits reach past the largest bigint.
CURSOR_PATTERN: Final = r"^[0-9a-z]{1,13}$"
# The per-task size limit is configured (api.max_data_bytes): openapi.py adds it per app.
DATA_DESCRIPTION: Final = (
    f"Any JSON object, nested at most {MAX_DATA_DEPTH} levels; its strings may not contain"
    " \\u0000 (jsonb cannot)."
)


class StrictSchema(Schema):
    """Unknown fields are errors (and the document says additionalProperties: false)."""

    class Meta:
        unknown = RAISE


class When(fields.String):
    """A date-time with a UTC offset, parsed as the rules parse it (service/datetimes.py)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metadata = {**self.metadata, "format": "date-time"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        parsed = parse_datetime(value)
        if isinstance(parsed, str):
            raise ValidationError(parsed)
        return parsed


class Seconds(fields.Float):
    """A JSON number (not a string or a boolean, which fields.Float would take)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if type(value) not in (int, float):
            raise ValidationError(DELAY_RANGE)
        return super()._deserialize(value, attr, data, **kwargs)


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
        metadata={"default": {}, "description": DATA_DESCRIPTION},
    )
    scheduled_at = When(
        allow_none=True,
        metadata={
            "description": "Run it no earlier than this (ISO 8601 with an offset; a past time"
            " means now). Until then its state is `scheduled`. Not with delay_seconds.",
        },
    )
    delay_seconds = Seconds(
        allow_none=True,
        validate=validate.Range(0, MAX_DELAY_SECONDS, error=DELAY_RANGE),
        metadata={"description": "Run it this many seconds from now. Not with scheduled_at."},
    )
    unique_key = fields.String(
        allow_none=True,
        validate=validate.Length(1, UNIQUE_KEY_MAX),
        metadata={
            "description": "While a task of the same type holds this key and is not finished,"
            " a create answers 200 with that task (X-Asynctask-Duplicate: true) and inserts"
            " nothing."
        },
    )

    @validates_schema
    def _one_time(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "scheduled_at" in data and "delay_seconds" in data:
            raise ValidationError({"scheduled_at": [NOT_BOTH], "delay_seconds": [NOT_BOTH]})


class TaskBatchSchema(StrictSchema):
    """Up to 10,000 new tasks, inserted together or not at all."""

    tasks = fields.List(
        fields.Nested(TaskCreateSchema), required=True, validate=validate.Length(1, BATCH_MAX)
    )


class BatchCreatedSchema(Schema):
    """The ids of a batch, in request order; which items matched an existing task."""

    ids = fields.List(fields.Integer(), required=True)
    duplicates = fields.List(
        fields.Integer(),
        required=True,
        metadata={
            "description": "Indexes of the items whose unique_key an unfinished task held: their"
            " id is that task's (a key repeated in the batch: the first item's task)."
        },
    )


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
    last_error = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "The last failed attempt's error (type, message, last traceback"
            " frames); null until an attempt fails. A task that completes after a failed"
            " attempt keeps it: it is the last failure, not the outcome."
        },
    )
    unique_key = fields.String(required=True, allow_none=True)


class TaskDetailSchema(TaskSchema):
    """One task with its result (GET /api/tasks/{id}; lists leave the result out)."""

    result = fields.Raw(
        required=True,
        allow_none=True,
        metadata={
            "description": "What the handler returned (any JSON value), once completed; null"
            " until then, or when it returned nothing.",
        },
    )


class TaskPageSchema(Schema):
    """One page of tasks, newest first; pass `next_cursor` as `cursor` for the next page."""

    tasks = fields.List(fields.Nested(TaskSchema), required=True)
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "null on the last page only: a page may be short and not last."},
    )


class TaskListQuerySchema(StrictSchema):
    """The filters and page of GET /api/tasks."""

    state = fields.String(validate=validate.OneOf(STATES))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    type = fields.String(validate=validate.Regexp(TYPE_PATTERN))
    limit = fields.Integer(
        load_default=LIST_LIMIT_DEFAULT,
        validate=validate.Range(1, LIST_LIMIT_MAX),
        metadata={
            "default": LIST_LIMIT_DEFAULT,
            "description": "At most this many tasks; fewer when their data would pass"
            " api.max_page_bytes (the page then ends early, with a next_cursor).",
        },
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


def _named(name: str, field: Callable[[], fields.Field], keys: tuple[str, ...]) -> type[Schema]:
    attrs: dict[str, Any] = {key: field() for key in keys}
    return Schema.from_dict(attrs, name=name)


_StateCounts = _named("StateCounts", lambda: fields.Integer(required=True), STATES)


class QueueSchema(Schema):
    """One priority's queue: paused or not, since its last change (null: never changed)."""

    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    paused = fields.Boolean(required=True)
    since = fields.DateTime(required=True, allow_none=True)


class MinuteSchema(Schema):
    """One minute of the overview's chart (the current one is partial: see `seconds`)."""

    minute = fields.DateTime(required=True)
    seconds = fields.Float(required=True, metadata={"description": "60, or so far this minute."})
    created = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    retrying = fields.Integer(required=True)
    created_per_second = fields.Float(required=True)
    completed_per_second = fields.Float(required=True)


class StatsSchema(Schema):
    """GET /api/stats (and each /api/events event): counts, lag, rates, pauses, workers."""

    counts = fields.Nested(
        _named("PriorityCounts", lambda: fields.Nested(_StateCounts, required=True), PRIORITIES),
        required=True,
    )
    queue_lag_seconds = fields.Nested(
        _named("QueueLag", lambda: fields.Float(required=True), PRIORITIES),
        required=True,
        metadata={"description": "Seconds since the oldest due task became due (0: none waits)."},
    )
    last_minute = fields.Nested(
        _named("LastMinute", lambda: fields.Integer(required=True), LAST_MINUTE_STATES),
        required=True,
        metadata={
            "description": "Tasks that finished in this clock minute and the one before (60 to"
            " 120 s), by final state."
        },
    )
    per_minute = fields.List(
        fields.Nested(MinuteSchema),
        required=True,
        metadata={"description": f"The last {CHART_MINUTES} minutes, the current one last."},
    )
    last_hour = fields.Nested(
        _named("LastHour", lambda: fields.Integer(required=True), ("created", *SERIES_STATES)),
        required=True,
        metadata={
            "description": "The last 60 clock minutes: tasks created, and moves into completed,"
            " failed (attempts spent) and retrying (a failed attempt to be retried)."
        },
    )
    paused = fields.Nested(
        _named("Paused", lambda: fields.Nested(QueueSchema, required=True), PRIORITIES),
        required=True,
    )
    supervisors = fields.Nested(
        _named("WorkersSummary", lambda: fields.Integer(required=True), WORKER_SUMMARY),
        required=True,
        metadata={
            "description": "Supervisors alive and dead, worker slots of the live ones, busy slots."
        },
    )
    types = fields.List(
        fields.String(), required=True, metadata={"description": "Task types in the table."}
    )
    generated_at = fields.DateTime(
        required=True, metadata={"description": "When the database answered (its clock)."}
    )
    workers = fields.Nested(
        _named("LiveWorkers", lambda: fields.Integer(required=True), PRIORITIES),
        required=True,
        metadata={
            "description": "Live worker processes per priority, from every host: those whose"
            " heartbeat in the worker registry (GET /api/workers) is at most 5 s old."
        },
    )
    due_without_workers = fields.List(
        fields.String(validate=validate.OneOf(PRIORITIES)),
        required=True,
        metadata={
            "description": "Priorities that have due tasks and no live worker: those tasks wait"
            " until a worker of that priority runs."
        },
    )


class ScheduleSchema(Schema):
    """A periodic task (`schedules:` in config.yaml) and its runs."""

    name = fields.String(required=True)
    cron = fields.String(required=True, metadata={"description": "5 fields, or 6 with seconds."})
    timezone = fields.String(required=True, metadata={"description": "IANA name, e.g. UTC."})
    type = fields.String(required=True)
    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    max_attempts = fields.Integer(required=True)
    data = fields.Dict(required=True)
    catch_up = fields.Integer(
        required=True,
        metadata={
            "description": "Most missed ticks run after every scheduler was down (1: the latest)."
        },
    )
    next_run_at = fields.DateTime(
        required=True,
        allow_none=True,
        metadata={"description": "The next tick (null: none in 50 years)."},
    )
    last_run_at = fields.DateTime(
        required=True,
        allow_none=True,
        metadata={"description": "The last tick enqueued (null: none yet)."},
    )
    last_task_id = fields.Integer(
        required=True, allow_none=True, metadata={"format": "int64", "description": "Its task."}
    )


class ScheduleListSchema(Schema):
    """Every configured schedule, in config order."""

    schedules = fields.List(fields.Nested(ScheduleSchema), required=True)
