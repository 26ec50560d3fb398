"""LISTEN with reconnect: a notification sets the event; a lost connection comes back."""

from __future__ import annotations

import asyncio

import psycopg2.extensions

from tests.test_worker import wait_until
from workers.listener import Listener


async def test_notification_sets_the_event_and_reconnects(
    database_url: str, sql: psycopg2.extensions.cursor
) -> None:
    wake = asyncio.Event()
    payloads: list[str] = []

    def notified(payload: str) -> None:
        payloads.append(payload)
        wake.set()

    listener = Listener(database_url, "tasks_normal", notified, keepalive=0.2)
    task = asyncio.create_task(listener.run())
    try:
        await wait_until(listener.connected.is_set)
        wake.clear()
        await asyncio.sleep(0.5)  # a few keepalive pings pass without waking anyone
        assert not wake.is_set()
        sql.execute("SELECT pg_notify('tasks_normal', '1')")
        await wait_until(wake.is_set)
        wake.clear()
        sql.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await wait_until(lambda: listener.failures > 0)
        await wait_until(listener.connected.is_set)
        assert wake.is_set()  # reconnecting wakes the worker: notifications may have been missed
        wake.clear()
        sql.execute("SELECT pg_notify('tasks_normal', '2')")
        await wait_until(wake.is_set)
        assert payloads == ["", "1", "", "2"]  # "" after each (re)connect: look now
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_unreachable_server_backs_off() -> None:
    wake = asyncio.Event()
    listener = Listener("postgresql://postgres@127.0.0.1:1/none", "tasks_low", wake, 1.0)
    task = asyncio.create_task(listener.run())
    await wait_until(lambda: listener.failures >= 2, timeout=5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not listener.connected.is_set()
