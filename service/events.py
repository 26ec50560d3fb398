"""Live updates for any number of viewers from one refresh per second per API process.

While at least one stream is open, a single task reads the shared statistics snapshot once per
interval (core/stats.CachedStats: metrics scrapes and /api/stats share it too), encodes it once as
a Server-Sent Event, and hands the same bytes to every stream. A viewer costs a write per second,
never a query; a slow viewer skips to the latest event instead of queueing old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Final

from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.stats import CachedStats

log = logging.getLogger("asynctask.api")
INTERVAL_SECONDS: Final = 1.0
RETRY_MILLISECONDS: Final = 2000  # how soon a browser's EventSource reconnects


def encode(name: str, data: object, event_id: int | None = None) -> bytes:
    """One Server-Sent Event: `event`, optional `id`, and `data` as one line of JSON."""
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return (head + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n").encode()


async def snapshot_event(stats: CachedStats, event_id: int | None = None) -> bytes:
    """The current snapshot as a `stats` event, or an `unavailable` event naming the error."""
    try:
        snapshot = await stats.get()
    except DatabaseUnavailable as exc:
        return encode("unavailable", {"error": str(exc)}, event_id)
    except Exception:  # e.g. not migrated: the stream stays up and says so
        log.exception("the statistics refresh for the event stream failed")
        return encode("unavailable", {"error": "the statistics query failed"}, event_id)
    return encode("stats", snapshot.as_json(), event_id)


class Broadcaster:
    """One refresh per interval while anyone listens; every listener gets the same bytes."""

    def __init__(self, stats: CachedStats, interval: float = INTERVAL_SECONDS) -> None:
        self.stats = stats
        self.interval = interval
        self.listeners = 0
        self.refreshes = 0
        self.closed = False
        self._latest: tuple[int, bytes] | None = None
        self._changed = asyncio.Condition()
        self._ticker: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while self.listeners and not self.closed:
            self.refreshes += 1
            event = await snapshot_event(self.stats, self.refreshes)
            async with self._changed:
                self._latest = (self.refreshes, event)
                self._changed.notify_all()
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[bytes]]:
        """Subscribe for the duration of the block: iterate to get each new event's bytes."""
        self.listeners += 1
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick())
        try:
            yield self._events()
        finally:
            self.listeners -= 1

    def _newer(self, seen: int) -> bool:
        return self.closed or (self._latest is not None and self._latest[0] > seen)

    async def _events(self) -> AsyncIterator[bytes]:
        seen = 0
        while not self.closed:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._newer, seen))
                if self.closed or self._latest is None:
                    return
                seen, event = self._latest
            yield event

    async def close(self) -> None:
        """End every stream (the server is stopping) and the refresh task."""
        self.closed = True
        async with self._changed:
            self._changed.notify_all()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
