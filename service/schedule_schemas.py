"""The shapes of GET /api/schedules (marshmallow): the periodic tasks and their runs."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from asynctask.core.models import PRIORITIES


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
