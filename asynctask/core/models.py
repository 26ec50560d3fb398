"""Plain data shared by the API and the workers: priorities, states, and the task record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRIORITY_NUMBERS: dict[str, int] = {"high": 1, "normal": 2, "low": 3}
PRIORITY_NAMES: dict[int, str] = {number: name for name, number in PRIORITY_NUMBERS.items()}

STATES: tuple[str, ...] = ("available", "running", "retrying", "completed", "failed", "cancelled")
DUE_STATES: tuple[str, ...] = ("available", "retrying")
FINISHED_STATES: tuple[str, ...] = ("completed", "failed", "cancelled")
CANCELLABLE_STATES: tuple[str, ...] = ("available", "retrying")
RETRYABLE_STATES: tuple[str, ...] = ("failed", "cancelled")


def channel_for(priority: str) -> str:
    """The NOTIFY channel workers of one priority LISTEN on."""
    return f"tasks_{priority}"


@dataclass(frozen=True, slots=True)
class Task:
    """What a handler receives: one claimed task, for one attempt."""

    id: int
    type: str
    priority: str
    attempts: int
    max_attempts: int
    data: dict[str, Any]
