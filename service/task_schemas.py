"""The shapes of tasks as the API answers them (marshmallow), and the parser of the list's query.

A task (the list's items), a task with its result (GET /api/tasks/{id}), a page of the list,
and the query GET /api/tasks takes, which service/task_views.py parses with this very schema.
"""

from __future__ import annotations

from typing import Final

from marshmallow import Schema, fields, validate

from asynctask.core.models import PRIORITIES, STATES, TYPE_PATTERN
from asynctask.service.common_schemas import StrictSchema

LIST_LIMIT_MAX: Final = 1000
LIST_LIMIT_DEFAULT: Final = 100
# A page cursor is an id in base 36; 13 digits reach past the largest bigint.
CURSOR_PATTERN: Final = r"^[0-9a-z]{1,13}$"


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
