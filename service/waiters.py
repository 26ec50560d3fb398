"""Wait-for-result: long-polls of GET /api/tasks/{id}?wait_seconds=N, woken through one LISTEN.

One connection per API process LISTENs on tasks_finished (opened on the first wait, kept after)
and registers itself as a reader of it (core/result_listeners.py: finishes notify only while
someone reads); `finish` and `cancel_task` NOTIFY it with the ids that reached a final state. A
waiter holds an asyncio.Event in a dict keyed by task id, never a pool connection: it registers,
then re-reads the row (so a task finished between its first read and the registration is not
missed), then sleeps on the event until a notification names its task or its time is up, and
re-reads once more. A thousand waiters cost the database one connection and one read each per
wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiopg
import psycopg2

from asynctask.core import backoff, channels, result_listeners
from asynctask.core.connections import connect, first_line
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.models import State

log = logging.getLogger("asynctask.api")
# TCP keepalives on the listening connection: a server that vanished without closing it (a host
# gone, a partition) is noticed within about 25 s instead of never, and the listener reconnects.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
Row = dict[str, Any]
LISTEN_CONNECTIONS = 1  # per API process, beside its pool, once anything has waited
UNREGISTER_SECONDS = 1.0  # the most an API's stop waits on removing its result_listeners row


class Waiters:
    """Every long-poll of this API process, and the one LISTEN connection that wakes them."""

    def __init__(self, url: str, connect_timeout: float) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.connects = 0  # connections opened so far (a test reads it)
        self._by_id: dict[int, set[asyncio.Event]] = {}
        self._listening = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._conn: aiopg.Connection | None = None  # the listening one, while connected
        self._closing = False

    @property
    def waiting(self) -> int:
        """How many requests are waiting now."""
        return sum(len(events) for events in self._by_id.values())

    async def until_finished(
        self, task_id: int, seconds: float, read: Callable[[], Awaitable[Row]]
    ) -> Row:
        """`read()`'s row once the task is final, or after `seconds` (then as it is)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        async with self._watch(task_id) as woken:
            while True:
                woken.clear()  # before the read: a notification after it is not lost
                row = await read()
                left = deadline - loop.time()
                if State(row["state"]).finished or left <= 0 or self._closing:
                    return row
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await woken.wait()

    @contextlib.asynccontextmanager
    async def _watch(self, task_id: int) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._by_id.setdefault(task_id, set()).add(event)
        try:
            await self._until_listening()
            yield event
        finally:
            events = self._by_id.get(task_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._by_id[task_id]

    async def _until_listening(self) -> None:
        if self._closing:
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="asynctask-waiters")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._listening.wait()
        except TimeoutError:
            raise DatabaseUnavailable("the wait-for-result listener is not connected") from None

    async def _listen(self) -> None:
        failures = 0
        while not self._closing:
            try:
                conn = await self._connect()
            except DatabaseUnavailable as exc:
                failures += 1
                log.warning("wait-for-result: LISTEN failed (%s); retrying", exc)
                await asyncio.sleep(backoff.restart_delay(failures))
                continue
            failures = 0
            self._conn = conn
            try:
                await self._forward(conn)
            finally:
                self._conn = None
                self._listening.clear()
                conn.close()

    async def _connect(self) -> aiopg.Connection:
        conn = await connect(
            self.url,
            timeout=self.connect_timeout,
            prepared_statements=False,
            application_name="asynctask api listener",
            **KEEPALIVES,
        )
        try:
            await channels.listen_finished(conn)
            # After the LISTEN: a finish that notifies once this is registered reaches us.
            await result_listeners.register(conn)
        except psycopg2.Error as exc:
            conn.close()
            raise DatabaseUnavailable(first_line(exc)) from exc
        self.connects += 1
        return conn

    async def _forward(self, conn: aiopg.Connection) -> None:
        self._listening.set()
        if self.connects > 1:
            log.info("wait-for-result: LISTEN re-established")
        self._wake_all()  # whatever finished while nobody listened: every waiter re-reads
        while True:
            try:
                message = await conn.notifies.get()
            except (psycopg2.Error, psycopg2.Warning) as exc:
                # aiopg ends the queue with the connection's first error: it is gone.
                log.warning("wait-for-result: LISTEN lost (%s); reconnecting", first_line(exc))
                return
            self._dispatch(message.payload)

    def _dispatch(self, payload: str) -> None:
        if not payload:
            self._wake_all()
            return
        for text in payload.split(","):
            with contextlib.suppress(ValueError):
                for event in self._by_id.get(int(text), ()):
                    event.set()

    def _wake_all(self) -> None:
        for events in self._by_id.values():
            for event in events:
                event.set()

    async def close(self) -> None:
        """Answer every waiter now (with its task as it is) and close the connection."""
        self._closing = True
        self._wake_all()
        if self._conn is not None:
            # So finishes stop notifying at once, not after the next API's registration or a
            # worker's prune notices this connection is gone; briefly: either of those will.
            with contextlib.suppress(psycopg2.Error, DatabaseUnavailable, TimeoutError):
                async with asyncio.timeout(UNREGISTER_SECONDS):
                    await result_listeners.unregister(self._conn)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
