"""The shapes of the dashboard's routes (marshmallow): queues, workers, bulk actions, session.

The bulk actions' bodies are parsed with these schemas too (they are not hot), so the document and
the checks cannot disagree.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from asynctask.core.bulk import BULK_CANCELLABLE
from asynctask.core.models import (
    PRIORITIES,
    RETRYABLE_STATES,
    TYPE_PATTERN,
)
from asynctask.service.common_schemas import StrictSchema
from asynctask.service.rules import ValidationFailed
from asynctask.service.status_schemas import QueueSchema
from asynctask.service.tokens import ADMIN, READ

WORKER_STATUSES = ("starting", "idle", "busy", "paused", "recovering", "stopping")


class StrictBoolean(fields.Boolean):
    """true or false only (marshmallow's Boolean also takes 1, "yes", "on"...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value


class QueueListSchema(Schema):
    """GET /api/queues: every priority, high first."""

    queues = fields.List(fields.Nested(QueueSchema), required=True)


class WorkerSlotSchema(Schema):
    """One worker slot of a supervisor, as its last heartbeat told it."""

    slot = fields.String(required=True, metadata={"description": "e.g. high_2"})
    priority = fields.String(required=True, validate=validate.OneOf(PRIORITIES))
    pid = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(WORKER_STATUSES))
    task_id = fields.Integer(
        required=True, allow_none=True, metadata={"description": "The task it runs (busy)."}
    )
    up_since = fields.DateTime(required=True, metadata={"description": "This process's start."})
    restarts = fields.Integer(required=True, metadata={"description": "Processes replaced."})
    last_heartbeat = fields.DateTime(required=True)
    alive = fields.Boolean(required=True, metadata={"description": "Beat within dead_after."})


class SupervisorSchema(Schema):
    """A supervisor (one per host, usually) and its worker slots."""

    host = fields.String(required=True)
    pid = fields.Integer(required=True)
    alive = fields.Boolean(required=True, metadata={"description": "Any slot beat lately."})
    up_since = fields.DateTime(required=True)
    last_heartbeat = fields.DateTime(required=True)
    rescued_at = fields.DateTime(
        required=True,
        allow_none=True,
        metadata={"description": "When its running tasks were rescued, once it was dead."},
    )
    slots = fields.List(fields.Nested(WorkerSlotSchema), required=True)


class WorkersSchema(Schema):
    """GET /api/workers: every supervisor on every host, with the database's clock."""

    now = fields.DateTime(required=True, metadata={"description": "The database's time."})
    heartbeat_seconds = fields.Float(required=True)
    dead_after_seconds = fields.Float(required=True)
    supervisors = fields.List(fields.Nested(SupervisorSchema), required=True)


def _bulk_schema(name: str, states: tuple[str, ...]) -> type[Schema]:
    attrs: dict[str, Any] = {
        "state": fields.String(
            validate=validate.OneOf(states),
            metadata={"description": f"Default: any of {', '.join(states)}."},
        ),
        "priority": fields.String(validate=validate.OneOf(PRIORITIES)),
        "type": fields.String(validate=validate.Regexp(TYPE_PATTERN)),
        "dry_run": StrictBoolean(
            required=True,
            metadata={"description": "true: only count the matching tasks; false: act."},
        ),
    }
    return StrictSchema.from_dict(attrs, name=name)


BulkCancelSchema = _bulk_schema("BulkCancel", tuple(BULK_CANCELLABLE))
BulkRetrySchema = _bulk_schema("BulkRetry", tuple(RETRYABLE_STATES))


class BulkResultSchema(Schema):
    """What a bulk action matched (dry run) or changed."""

    action = fields.String(required=True, validate=validate.OneOf(("cancel", "retry")))
    dry_run = fields.Boolean(required=True)
    states = fields.List(fields.String(), required=True)
    count = fields.Integer(required=True)


class LoginSchema(StrictSchema):
    """POST /api/session: the token to exchange for a session cookie."""

    token = fields.String(required=True, validate=validate.Length(min=1, max=4096))


class SessionSchema(Schema):
    """Who the caller is: whether tokens are required, and the role they act with."""

    auth_required = fields.Boolean(required=True)
    role = fields.String(required=True, allow_none=True, validate=validate.OneOf((ADMIN, READ)))
    via = fields.String(
        required=True,
        allow_none=True,
        validate=validate.OneOf(("bearer", "cookie", "open")),
        metadata={"description": "open: no tokens are configured."},
    )
    expires_at = fields.DateTime(required=True, allow_none=True)


def load(schema: Schema, payload: Any) -> dict[str, Any]:
    """Parse a body with `schema`, or ValidationFailed naming every bad field (a 422)."""
    try:
        loaded: dict[str, Any] = schema.load(payload)
    except ValidationError as exc:
        messages = exc.messages_dict
        raise ValidationFailed({k: [str(m) for m in v] for k, v in messages.items()}) from None
    return loaded
