"""The task as the API shows it, typed: what every client call that answers a task returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asynctask.core.models import FINISHED_STATES

_TIMES = ("scheduled_at", "inserted_at", "updated_at", "started_at", "finished_at")
_KNOWN = frozenset(
    {"id", "type", "priority", "state", "attempts", "max_attempts", "data", "last_error"}
    | set(_TIMES)
    | {"result", "unique_key"}
)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task: its fields as the API answered them (timestamps parsed).

    `deduplicated` is true when a create found an unfinished task with the same `unique_key`
    and answered that one instead of making a new one. Fields a newer server adds are kept in
    `extra`.
    """

    id: int
    type: str
    priority: str
    state: str
    attempts: int
    max_attempts: int
    data: dict[str, Any]
    scheduled_at: datetime
    inserted_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None
    result: Any = None
    unique_key: str | None = None
    deduplicated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True in a final state: completed, failed or cancelled."""
        return self.state in FINISHED_STATES

    @property
    def succeeded(self) -> bool:
        """True once completed."""
        return self.state == "completed"

    def as_json(self) -> dict[str, Any]:
        """The task in the API's JSON shape (timestamps as ISO 8601 text)."""
        fields: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "priority": self.priority,
            "state": self.state,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "data": self.data,
        }
        for key in _TIMES:
            value = getattr(self, key)
            fields[key] = None if value is None else value.isoformat()
        fields["last_error"] = self.last_error
        for key in ("result", "unique_key"):
            if getattr(self, key) is not None:
                fields[key] = getattr(self, key)
        return {**fields, **self.extra}

    @classmethod
    def from_json(cls, raw: dict[str, Any], deduplicated: bool = False) -> TaskRecord:
        """Build from the API's JSON object (unknown fields go to `extra`)."""
        times = {key: _time(raw.get(key)) for key in _TIMES}
        return cls(
            id=int(raw["id"]),
            type=str(raw["type"]),
            priority=str(raw["priority"]),
            state=str(raw["state"]),
            attempts=int(raw["attempts"]),
            max_attempts=int(raw["max_attempts"]),
            data=dict(raw.get("data") or {}),
            scheduled_at=times["scheduled_at"] or _missing("scheduled_at"),
            inserted_at=times["inserted_at"] or _missing("inserted_at"),
            updated_at=times["updated_at"] or _missing("updated_at"),
            started_at=times["started_at"],
            finished_at=times["finished_at"],
            last_error=raw.get("last_error"),
            result=raw.get("result"),
            unique_key=raw.get("unique_key"),
            deduplicated=deduplicated,
            extra={key: value for key, value in raw.items() if key not in _KNOWN},
        )


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _missing(name: str) -> datetime:
    raise ValueError(f"the API's task has no {name}")
