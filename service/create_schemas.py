"""The shapes of creating tasks in the OpenAPI document (marshmallow): one task, a batch, its ids.

They describe what service/rules.py enforces, built from the same constants; tests check that the
two agree.
"""

from __future__ import annotations

from typing import Any, Final

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from asynctask.core.checks import MAX_INT32
from asynctask.core.models import DEFAULT_PRIORITY, PRIORITIES, UNIQUE_KEY_MAX
from asynctask.service.common_schemas import StrictSchema
from asynctask.service.datetimes import parse_datetime
from asynctask.service.rules import (
    BATCH_MAX,
    DELAY_RANGE,
    MAX_DATA_DEPTH,
    MAX_DELAY_SECONDS,
    NOT_BOTH,
)

# The per-task size limit is configured (api.max_data_bytes): openapi.py adds it per app.
DATA_DESCRIPTION: Final = (
    f"Any JSON object, nested at most {MAX_DATA_DEPTH} levels; its strings may not contain"
    " \\u0000 (jsonb cannot)."
)


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
