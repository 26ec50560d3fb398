"""LISTEN tasks_<priority> on a dedicated connection and hand each payload to a callback.

A notification is a hint (the claim is the truth), so a lost connection only costs latency: the
worker keeps polling while this reconnects with capped, jittered backoff (procrastinate's aiopg
connector; aiopg `examples/notify.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg2

from service import db
from service.errors import DatabaseUnavailable
from workers import backoff
from workers.connection import raise_if_cancelled

log = logging.getLogger("asynctask.listener")
# How long to wait for a notification before checking that the connection is still alive: a
# silently dropped TCP connection raises nothing until we send something.
KEEPALIVE_SECONDS = 10.0


class Listener:
    """Keeps one LISTEN connection up and calls `notified(payload)` for every notification.

    After (re)connecting it calls `notified("")`: anything sent meanwhile was missed.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        notified: Callable[[str], None],
        connect_timeout: float = 5.0,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.url = url
        self.channel = channel
        self.notified = notified
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.connected = asyncio.Event()
        self.failures = 0

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after any connection loss."""
        while True:
            try:
                await self._listen_once()
            except (DatabaseUnavailable, psycopg2.Error, OSError) as exc:
                raise_if_cancelled()
                self.connected.clear()
                self.failures += 1
                delay = backoff.restart_delay(self.failures, base_ms=250, cap_ms=10_000)
                log.warning(
                    "LISTEN %s lost (%s); reconnecting in %.1f s, polling meanwhile",
                    self.channel,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _listen_once(self) -> None:
        conn = await db.connect(self.url, timeout=self.connect_timeout)
        try:
            with db.translate_errors(self.url):
                await db.listen(conn, self.channel)
                if self.failures:
                    log.info("LISTEN %s re-established", self.channel)
                self.failures = 0
                self.connected.set()
                self.notified("")
                while True:
                    try:
                        async with asyncio.timeout(self.keepalive):
                            message = await conn.notifies.get()
                    except TimeoutError:
                        await asyncio.wait_for(db.ping(conn), self.connect_timeout)
                        continue
                    self.notified(message.payload)
        finally:
            conn.close()
