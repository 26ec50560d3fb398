"""The demo handlers named by the default config.yaml. Replace them with your own."""

from __future__ import annotations

import logging

from asynctask.core.models import Task

log = logging.getLogger("asynctask.handlers")


async def report(task: Task) -> None:
    """Builds a report (the demo just logs it at debug level)."""
    log.debug("report %s for %s", task.id, task.data)


async def finances(task: Task) -> None:
    """Runs a finance job (the demo just logs it at debug level)."""
    log.debug("finances %s for %s", task.id, task.data)
