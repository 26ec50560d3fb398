"""LISTEN on asynctask's notification channels: new tasks, finished tasks, and the rest.

LISTEN takes no bind parameter, so the channel name is spliced into the statement text; every
name comes from a constant (models.py, or a module's CHANNEL), never from a request, and
`listen_channel` (a worker's cancels and pause changes) refuses anything that is not an
identifier.
"""

from __future__ import annotations

import aiopg

from asynctask.core.connections import execute_text
from asynctask.core.models import FINISHED_CHANNEL, Priority


async def listen(conn: aiopg.Connection, priority: Priority) -> None:
    """LISTEN on a priority's channel (a name from models.Priority, never from a request)."""
    await execute_text(conn, f"LISTEN {priority.channel}")


async def listen_finished(conn: aiopg.Connection) -> None:
    """LISTEN for tasks reaching a final state (`finish` and `cancel_task` NOTIFY their ids)."""
    await execute_text(conn, f"LISTEN {FINISHED_CHANNEL}")


async def listen_channel(conn: aiopg.Connection, channel: str) -> None:
    """LISTEN on one of asynctask's own channels (a constant, never from a request)."""
    if not channel.isidentifier():
        raise ValueError(f"not a channel name: {channel!r}")
    await execute_text(conn, f"LISTEN {channel}")
