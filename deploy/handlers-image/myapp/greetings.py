"""An application's handler module, named in config.yaml beside it as `greetings:greet`."""

from __future__ import annotations

import logging

from asynctask import Task

log = logging.getLogger("myapp.greetings")


def greet(task: Task) -> None:
    """Greets task.data["name"]; raising would fail this attempt, and it would be retried."""
    name = task.data.get("name", "world")
    attempt = f"{task.attempts} of {task.max_attempts}"
    log.info("hello, %s (task %s, attempt %s)", name, task.id, attempt)
