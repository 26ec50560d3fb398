"""Group commit for POST /api/tasks: single creates that arrive together share one INSERT.

Each create costs a round trip, a commit (a WAL flush) and the driver's per-query work, which was
a third of the API's CPU under 32 concurrent clients. Here at most `statements` INSERTs are in
flight; a create that finds one free goes out at once (an idle create waits for nothing), and
creates that arrive while all are busy wait for the next free one and go out together. Every
create is still answered only after its own row is committed. Creates with a unique_key or an
Idempotency-Key go into the group too (asynctask/core/creates.py decides per group).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiopg

from asynctask.core import creates
from asynctask.core.connections import acquire
from asynctask.core.creates import Created, RequestKey
from asynctask.core.errors import DatabaseUnavailable, IdempotencyKeyTaken
from asynctask.service.rules import NewTask

log = logging.getLogger("asynctask.api")

# Two in flight: while one INSERT waits for its commit the next is already filling, and a lone
# create never queues behind another's commit. More statements would mean smaller groups.
STATEMENTS = 2
# Rows per INSERT at most; far above what concurrent clients build up, a bound on one statement.
MAX_GROUP = 1000

_Waiter = tuple[NewTask, RequestKey | None, "asyncio.Future[Created]"]


class GroupCommit:
    """Creates tasks one call at a time, inserting concurrent calls together."""

    def __init__(
        self,
        pool: aiopg.Pool,
        timeout: float,
        statements: int = STATEMENTS,
        max_group: int = MAX_GROUP,
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self.statements = statements
        self.max_group = max_group
        self._waiting: list[_Waiter] = []
        self._inserts: set[asyncio.Task[None]] = set()

    async def create(self, task: NewTask, key: RequestKey | None = None) -> Created:
        """Insert one task once committed: its row, or the task holding its unique_key.

        IdempotencyKeyTaken if `key` has an answer already.
        """
        future: asyncio.Future[Created] = asyncio.get_running_loop().create_future()
        self._waiting.append((task, key, future))
        if len(self._inserts) < self.statements:
            self._start()
        return await future

    async def close(self) -> None:
        """Wait for the INSERTs in flight (the pool closes after this)."""
        while self._inserts:
            await asyncio.gather(*self._inserts, return_exceptions=True)

    def _start(self) -> None:
        insert = asyncio.create_task(self._insert_next())
        self._inserts.add(insert)
        insert.add_done_callback(self._done)

    def _done(self, insert: asyncio.Task[None]) -> None:
        self._inserts.discard(insert)
        if self._waiting and len(self._inserts) < self.statements:
            self._start()

    async def _insert_next(self) -> None:
        group, self._waiting = self._waiting[: self.max_group], self._waiting[self.max_group :]
        group = [waiter for waiter in group if not waiter[2].done()]
        try:
            await self._insert(group)
        finally:
            # Cancelled (shutdown) before answering: nobody may wait forever.
            for _, _, future in group:
                if not future.done():
                    future.cancel()

    async def _insert(self, group: list[_Waiter]) -> None:
        if not group:
            return
        try:
            async with acquire(self.pool, self.timeout) as conn:
                results = await creates.create(
                    conn, [task.row() for task, _, _ in group], [key for _, key, _ in group]
                )
        except DatabaseUnavailable as exc:
            for _, _, future in group:
                _fail(future, exc)
        except Exception as exc:
            if len(group) == 1:
                _fail(group[0][2], exc)
                return
            # A row the server refused (say, a CHECK added to the table), or an Idempotency-Key
            # with an answer already, must fail only its own request, so the statement failed for
            # all: insert each alone.
            level = logging.INFO if isinstance(exc, IdempotencyKeyTaken) else logging.WARNING
            log.log(level, "group insert of %d tasks failed (%s); one by one", len(group), exc)
            for waiter in group:
                await self._insert([waiter])
        else:
            for (_, _, future), result in zip(group, results, strict=True):
                if isinstance(result, Exception):
                    _fail(future, result)
                elif not future.done():
                    future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
