"""Who reads tasks_finished: the API processes whose wait-for-result listener is connected.

Finishing statements NOTIFY tasks_finished only while one is registered (schema.sql,
asynctask_notify_finished): PostgreSQL wakes every LISTENing backend of a database for each NOTIFY,
whatever its channel, so notifications nobody reads cost the workers' own listeners a wake-up
each. A registration is fenced against finishes in flight by FENCE_LOCK (see register).
"""

from __future__ import annotations

from typing import Final

import aiopg

from asynctask.core.connections import execute
from asynctask.core.sql import QUERIES

# 'asyncRL' as a number; schema.sql's asynctask_notify_finished takes it shared (a test pins it).
FENCE_LOCK: Final = 0x61_73_79_6E_63_52_4C


async def register(conn: aiopg.Connection) -> None:
    """Record `conn` (already LISTENing on tasks_finished) as a reader of it.

    Returns once every finish that did not see the registration has committed: a task read after
    this is final if such a finish ended it, and any later finish notifies.
    """
    await execute(conn, QUERIES["register_result_listener"], FENCE_LOCK)


async def unregister(conn: aiopg.Connection) -> None:
    """`conn` stops reading tasks_finished (an API stopping)."""
    await execute(conn, QUERIES["unregister_result_listener"])


async def forget_dead(conn: aiopg.Connection) -> int:
    """Remove the registrations of connections that are gone (an API that died); how many."""
    return await execute(conn, QUERIES["forget_dead_result_listeners"])
