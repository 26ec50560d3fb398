"""The worker's connection LISTENs too: notifications reach the worker across reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiopg
import psycopg2.errors
import psycopg2.extensions
import pytest

from asynctask.core import connections
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.models import Priority
from asynctask.workers.connection import QueryConnection
from tests.waiting import wait_until_async


@contextlib.asynccontextmanager
async def listening(
    url: str, priority: Priority, payloads: list[str]
) -> AsyncIterator[QueryConnection]:
    """A worker's connection LISTENing for `priority`, forwarding payloads into `payloads`."""
    conn = QueryConnection(url, 5, priority, payloads.append)
    forward = asyncio.create_task(conn.forward())
    try:
        yield conn
    finally:
        forward.cancel()
        await asyncio.gather(forward, return_exceptions=True)
        conn.close()


async def test_notifications_are_forwarded_across_a_reconnect(
    database_url: str, sql: psycopg2.extensions.cursor
) -> None:
    payloads: list[str] = []
    async with listening(database_url, Priority.NORMAL, payloads) as conn:
        await conn.run(connections.ping)
        assert conn.listening.is_set() and payloads == [""]  # (re)connected: look now
        sql.execute("SELECT pg_notify('tasks_normal', '1'), pg_notify('tasks_high', '9')")
        await wait_until_async(lambda: len(payloads) == 2)
        sql.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        # The loss itself wakes the worker, whose next call reconnects and LISTENs again.
        await wait_until_async(lambda: len(payloads) == 3 and not conn.listening.is_set())
        await conn.run(connections.ping)  # finds the connection closed and opens a new one
        assert conn.connects == 2 and conn.listening.is_set()
        sql.execute("SELECT pg_notify('tasks_normal', '2')")
        await wait_until_async(lambda: len(payloads) == 5)
        assert payloads == ["", "1", "", "", "2"]


async def test_an_unreachable_server_is_database_unavailable() -> None:
    payloads: list[str] = []
    async with listening("postgresql://postgres@127.0.0.1:1/none", Priority.LOW, payloads) as conn:
        with pytest.raises(DatabaseUnavailable):
            await conn.run(connections.ping)
        await asyncio.sleep(0.1)
        assert not conn.listening.is_set() and payloads == []


async def _bad_statement(conn: aiopg.Connection) -> None:
    async with conn.cursor() as cur:
        await cur.execute("SELECT no_such_column FROM tasks")


async def test_an_sql_error_does_not_silence_notifications(
    database_url: str, sql: psycopg2.extensions.cursor
) -> None:
    # aiopg closes a connection's notification queue on the first error a poll raises, SQL errors
    # included: the connection is replaced so that notifications keep coming.
    payloads: list[str] = []
    async with listening(database_url, Priority.LOW, payloads) as conn:
        await conn.run(connections.ping)
        with pytest.raises(psycopg2.errors.UndefinedColumn):
            await conn.run(_bad_statement)
        await wait_until_async(lambda: payloads == ["", ""] and not conn.listening.is_set())
        await conn.run(connections.ping)
        assert conn.connects == 2 and payloads == ["", "", ""]
        sql.execute("SELECT pg_notify('tasks_low', '7')")
        await wait_until_async(lambda: payloads[-1:] == ["7"])


async def test_a_notification_read_together_with_a_result_is_not_left_behind(
    database_url: str, sql: psycopg2.extensions.cursor
) -> None:
    # Found under CPU load as a 5 s (poll-long) wait: the worker read a statement's result and a
    # notification sent just after it in one go; libpq parsed the result and left the notification
    # in its buffer, and with the socket drained aiopg's reader never ran again.
    payloads: list[str] = []
    async with listening(database_url, Priority.HIGH, payloads) as conn:
        await conn.run(connections.ping)
        for n in range(3):
            statement = asyncio.create_task(conn.run(connections.ping))
            for _ in range(3):
                await asyncio.sleep(0)  # the query goes out
            time.sleep(0.1)  # noqa: ASYNC251 - the loop must stand still: the answer waits...
            sql.execute("SELECT pg_notify('tasks_high', %s)", (str(n),))  # ...and this behind it
            time.sleep(0.1)  # noqa: ASYNC251
            await statement
            await wait_until_async(lambda n=n: str(n) in payloads, timeout=1)
