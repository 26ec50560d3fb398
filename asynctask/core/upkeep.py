"""Keeping the tasks table small: pruning finished tasks, and the settings autovacuum needs.

Pruning runs in one supervisor at a time across all hosts (workers/pruner.py), which a session
advisory lock (try_lock, unlock) decides. A queue table without autovacuum bloats whatever is
pruned, so `asynctask` warns at start when the server's settings turn it off (cli/start.py).
"""

from __future__ import annotations

import aiopg

from asynctask.core.connections import execute, rows
from asynctask.core.sql import QUERIES


async def prune_finished(
    conn: aiopg.Connection, *, state: str, older_than_days: float, limit: int = 5000
) -> int:
    """Delete up to `limit` tasks of one finished state older than the cutoff; returns how many."""
    return await execute(conn, QUERIES["prune_finished"], state, older_than_days, limit)


async def try_lock(conn: aiopg.Connection, key: int) -> bool:
    """Take a session advisory lock if free (one pruner across all supervisors)."""
    return bool((await rows(conn, QUERIES["try_lock"], key))[0]["locked"])


async def unlock(conn: aiopg.Connection, key: int) -> None:
    """Release a session advisory lock taken with try_lock."""
    await rows(conn, QUERIES["unlock"], key)


async def vacuum_settings(conn: aiopg.Connection) -> dict[str, str]:
    """The server's `autovacuum` and `track_counts` ('on'/'off'): autovacuum needs both on."""
    found = await rows(conn, QUERIES["vacuum_settings"])
    return {str(row["name"]): str(row["setting"]) for row in found}
