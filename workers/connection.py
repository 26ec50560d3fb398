"""A worker's one database connection: its queries and, for a pool's leader, its LISTEN.

aiopg refuses two queries at once on one connection, and the worker has several coroutines (claim,
flush, lease extension, rescue) that need it, so every call takes a lock. A lost connection is
dropped and re-opened on the next call; the caller sees DatabaseUnavailable and backs off.

A leader's connection also LISTENs (workers/wakeup.py). A notification reaches the backend that
then runs the claim, so the claim does not have to wake a second, idle backend (bench/README.md),
and a worker costs the server one connection, not two. PostgreSQL delivers
notifications between transactions, so one that arrives during a query waits for it to end: the
worker looks for work after every statement anyway. A notification is only a hint (the claim is
the truth); every worker also polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiopg
import psycopg2
import psycopg2.extensions

from asynctask.core import channels
from asynctask.core.connections import connect, first_line, translate_errors
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.models import Priority

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("asynctask.worker")


class QueryConnection:
    """One lazily (re)opened connection; `run(fn, ...)` calls one core db function on it.

    With `listen_to`, every (re)opened connection LISTENs on that priority's channel, and
    `forward()` hands each notification's payload to `notified`; `notified("")` follows every
    (re)connect (anything sent meanwhile was missed) and every loss of the connection (so the
    worker reconnects now). `also` adds channels (and their handlers, called alike) to LISTEN on
    with it: the same backend, so a leader costs the server no extra wake-up per new task.
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        listen_to: Priority | None = None,
        notified: Callable[[str], None] | None = None,
        application_name: str = "asynctask worker",
        prepared_statements: bool = True,
        also: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        self.url = url
        self.application_name = application_name  # what pg_stat_activity shows for it
        self.timeout = timeout
        self.listen_to = listen_to
        self.channel = None if listen_to is None else listen_to.channel
        self.prepared_statements = prepared_statements
        self.notified = notified or (lambda payload: None)
        self.also = dict(also or {}) if listen_to is not None else {}
        self.connects = 0  # connections opened so far
        self.listening = asyncio.Event()  # set while a connection LISTENs on `channel`
        self._conn: aiopg.Connection | None = None
        self._lock = asyncio.Lock()

    async def run(
        self,
        fn: Callable[Concatenate[aiopg.Connection, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Call `fn(conn, *args, **kwargs)`; DatabaseUnavailable if the server is gone."""
        async with self._lock:
            if self._conn is None or self._conn.closed:
                await self._open()
            assert self._conn is not None
            try:
                with translate_errors(self.url):
                    result = await fn(self._conn, *args, **kwargs)
            except DatabaseUnavailable:
                self.close()
                raise
            if self.channel is not None:
                # The statement's outcome stands even if the connection breaks right here: a
                # broken connection is found, and replaced, by the next call.
                with contextlib.suppress(psycopg2.Error):
                    self._drain(self._conn)
            return result

    def _drain(self, conn: aiopg.Connection) -> None:
        # A notification that arrived with a statement's last result can stay behind in libpq's
        # buffer (or psycopg2's list): the socket has nothing more to read, so aiopg's reader never
        # runs and the worker would sleep to its next poll. Parse what is buffered, hand it on.
        raw = conn.raw
        raw.poll()
        while raw.notifies:
            self._dispatch(raw.notifies.pop(0))

    def _dispatch(self, message: Any) -> None:
        self.also.get(message.channel, self.notified)(message.payload)

    def _missed(self) -> None:
        # Anything sent while no connection listened was missed: every handler hears "".
        self.notified("")
        for handler in self.also.values():
            handler("")

    async def _open(self) -> None:
        self.close()
        conn = await connect(
            self.url,
            timeout=self.timeout,
            application_name=self.application_name,
            prepared_statements=self.prepared_statements,
        )
        self.connects += 1
        if self.listen_to is not None:
            try:
                with translate_errors(self.url):
                    await channels.listen(conn, self.listen_to)
                    for channel in self.also:
                        await channels.listen_channel(conn, channel)
            except DatabaseUnavailable:
                conn.close()
                raise
        self._conn = conn
        if self.channel is not None:
            if self.connects > 1:
                log.info("LISTEN %s re-established", self.channel)
            self.listening.set()
            self._missed()

    async def forward(self) -> None:
        """Hand notifications to `notified` until cancelled, across reconnects."""
        while True:
            await self.listening.wait()
            conn = self._conn
            assert conn is not None
            try:
                message = await conn.notifies.get()
            except (psycopg2.Error, psycopg2.Warning) as exc:
                # aiopg ends the queue with the first error a poll of the connection raised: a
                # lost connection, or an SQL error of one of our statements. Either way no more
                # notifications come through it, so drop it; the worker's next call (now, woken
                # below) opens a new one, with backoff while the server is away.
                if self._conn is conn:
                    log.warning("LISTEN %s lost (%s); reconnecting", self.channel, first_line(exc))
                    self.close()
                    self._missed()
                continue
            self._dispatch(message)

    def close(self) -> None:
        """Close the connection if open; the next `run` opens a new one."""
        self.listening.clear()
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a driver call swallowed.

    On Python 3.11 `asyncio.wait_for` (used inside aiopg) can drop a cancel that races with the
    inner future finishing (CPython gh-86296); a loop that catches the driver's error and retries
    would then never stop. The task still counts the request, so check it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
