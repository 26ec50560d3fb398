"""The supervisor's heartbeat file: a container's liveness check for the workers role.

With ASYNCTASK_HEARTBEAT_FILE set, the supervisor touches that file from its main loop about once
a second and removes it when it exits. A check that the file is recent proves the loop is turning
(so crashed workers are restarted and hung ones killed), nothing more: not that the database
answers, nor that tasks complete. docker-compose.yml's workers healthcheck reads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

HEARTBEAT_ENV = "ASYNCTASK_HEARTBEAT_FILE"
INTERVAL_SECONDS = 1.0

log = logging.getLogger("asynctask.supervisor")


class HeartbeatFile:
    """A file whose modification time says when the supervisor's loop last turned."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last = float("-inf")

    def beat(self) -> None:
        """Touch the file, at most once per INTERVAL_SECONDS; a failure disables it (logged)."""
        now = time.monotonic()
        if now - self._last < INTERVAL_SECONDS:
            return
        self._last = now
        try:
            self.path.touch()
        except OSError as exc:
            log.warning(
                "%s: cannot write %s (%s); no heartbeat file", HEARTBEAT_ENV, self.path, exc
            )
            self._last = float("inf")

    def remove(self) -> None:
        """The supervisor is gone: no file, so a check fails at once instead of after a while."""
        with contextlib.suppress(OSError):
            self.path.unlink()


def heartbeat_file(environ: Mapping[str, str] = os.environ) -> HeartbeatFile | None:
    """The heartbeat file named by ASYNCTASK_HEARTBEAT_FILE, or None when it is not set."""
    path = environ.get(HEARTBEAT_ENV, "").strip()
    return HeartbeatFile(Path(path)) if path else None
