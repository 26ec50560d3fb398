"""One clock grid per worker process, so that its periodic work shares wake-ups.

An idle worker costs what its wake-ups cost: on a 2-vCPU VM about 0.25 ms of CPU each, however
little it then does (bench/README.md, "Idle"). The watchdog's beat, the poll, the registry
heartbeat, the lease keeper, the cancel check and the watch each slept on a timer of its own:
5.5 wake-ups a second for an idle worker. Each now sleeps until the next multiple of its period
on one grid per process, anchored where the worker started, so one wake-up serves all that are
due at once; a poll still comes every `timeout_milliseconds` (on the grid). The workers of a host
start a few milliseconds apart, so they do not all wake at the same instant.
"""

from __future__ import annotations

import asyncio
import math


class Ticks:
    """The grid: the points `origin + k * period` of the event loop's clock, for each period."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = origin  # None: the loop's time at the first use, when the worker starts

    def next(self, period: float) -> float:
        """The loop time of the first grid point of `period` strictly after now."""
        now = asyncio.get_running_loop().time()
        if self.origin is None:
            self.origin = now
        return self.origin + (math.floor((now - self.origin) / period) + 1) * period

    async def sleep(self, period: float) -> None:
        """Sleep until the next grid point of `period`."""
        await asyncio.sleep(self.next(period) - asyncio.get_running_loop().time())
