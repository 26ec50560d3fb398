"""A worker's background upkeep: the watchdog's beat, and its leases.

Both run as tasks beside the claim loop, so they go on while a long task runs: the beat tells the
supervisor the event loop still turns (and stops the worker if the supervisor is gone); the lease
keeper extends the leases of what this worker holds and rescues tasks whose lease expired.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from asynctask.core import claims
from asynctask.core.config import Config
from asynctask.core.errors import DatabaseUnavailable
from asynctask.workers.connection import QueryConnection, raise_if_cancelled
from asynctask.workers.link import SlotLink
from asynctask.workers.recovery import rescue_expired
from asynctask.workers.ticks import Ticks

log = logging.getLogger("asynctask.worker")
BEAT_SECONDS = 1.0


async def beat(
    link: SlotLink, supervisor_alive: Callable[[], bool], stop: Callable[[str], None], ticks: Ticks
) -> None:
    """Heartbeat for the supervisor's watchdog, and stop the worker if the supervisor vanished."""
    while True:
        link.beat()
        if not supervisor_alive():
            stop("the supervisor is gone")
        await ticks.sleep(BEAT_SECONDS)


async def keep_leases(
    conn: QueryConnection,
    config: Config,
    locked_by: str,
    slot: str,
    held: Callable[[], tuple[list[int], list[str]]],
    ticks: Ticks,
) -> None:
    """Extend our leases every lease/3 and rescue expired ones every lease/2."""
    tick = config.lease_seconds / 6
    for n in range(1, sys.maxsize):
        await ticks.sleep(tick)
        try:
            if n % 2 == 0:
                ids, tokens = held()
                if ids:
                    await conn.run(claims.extend_leases, ids, tokens, config.lease_seconds)
            if n % 3 == 0:
                rescued = await rescue_expired(conn, config, locked_by)
                if rescued:
                    fields = {"event": "rescued", "slot": slot, "count": rescued}
                    log.warning("rescued %d tasks whose lease expired", rescued, extra=fields)
        except DatabaseUnavailable:
            raise_if_cancelled()  # else: the main loop reports it and reconnects
