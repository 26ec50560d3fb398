"""The shapes of what the status routes answer (marshmallow): the probes, and the statistics.

HealthSchema is /health and /ready's answer; StatsSchema (GET /api/stats and each /api/events
event) and its parts: counts by priority and state, lag, the per-minute chart, the pause of each
priority (QueueSchema, also the answer of pausing and resuming one), the workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from marshmallow import Schema, fields, validate

from asynctask.core.models import PRIORITIES, STATES
from asynctask.core.stats import CHART_MINUTES, LAST_MINUTE_STATES, SERIES_STATES

WORKER_SUMMARY: Final = ("alive", "dead", "slots", "busy")


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
