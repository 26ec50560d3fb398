"""A worker's query connection: one aiopg connection shared by its coroutines, reconnected lazily.

aiopg refuses two queries at once on one connection, and the worker has several coroutines (claim,
flush, lease extension, rescue) that need it, so every call takes a lock. A lost connection is
dropped and re-opened on the next call; the caller sees DatabaseUnavailable and backs off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import aiopg

from service import db
from service.errors import DatabaseUnavailable

P = ParamSpec("P")
T = TypeVar("T")


class QueryConnection:
    """One lazily (re)opened connection; `run(db.fn, ...)` calls one db function on it."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
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
                self._conn = await db.connect(self.url, timeout=self.timeout)
            try:
                with db.translate_errors(self.url):
                    return await fn(self._conn, *args, **kwargs)
            except DatabaseUnavailable:
                self.close()
                raise

    def close(self) -> None:
        """Close the connection if open; the next `run` opens a new one."""
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
