"""Handlers used by the tests (referenced as tests.handlers:<name> in test configs)."""

from __future__ import annotations

import asyncio
import os
import time

import psycopg2

from asynctask.core.models import Task


async def ok(task: Task) -> None:
    """Succeeds at once."""


def flaky(task: Task) -> None:
    """Fails until the attempt named by data['succeed_on'] (default 2)."""
    if task.attempts < int(task.data.get("succeed_on", 2)):
        raise RuntimeError(f"flaky failure on attempt {task.attempts}")


def boom(task: Task) -> None:
    """Always fails."""
    raise ValueError("boom")


def unstorable(task: Task) -> None:
    """Fails with a message PostgreSQL cannot store as is: a NUL, or a lone surrogate."""
    raise ValueError({"nul": "bad\x00byte", "surrogate": "bad \udcff char"}[task.data["kind"]])


async def sleepy(task: Task) -> None:
    """Sleeps data['seconds'] (default 1) without blocking the loop."""
    await asyncio.sleep(float(task.data.get("seconds", 1)))


def hang(task: Task) -> None:
    """Blocks its thread for data['seconds'] (default 3600): cannot be interrupted."""
    time.sleep(float(task.data.get("seconds", 3600)))


def record(task: Task) -> None:
    """Records each execution in table `executions` over its own autocommit connection.

    The record survives even if the task's completion is lost, so tests can count duplicates.
    Sleeps data['seconds'] (default 0) afterwards, to widen the window for kills.
    """
    conn = psycopg2.connect(os.environ["ASYNCTASK_TEST_RECORD_DSN"])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO executions (task_id, attempt, pid) VALUES (%s, %s, %s)",
            (task.id, task.attempts, os.getpid()),
        )
    conn.close()
    time.sleep(float(task.data.get("seconds", 0)))


_hoard: list[bytearray] = []


def leak(task: Task) -> None:
    """Allocates data['mb_per_step'] (default 20) MB every 50 ms, up to data['max_mb'] (1024)."""
    step = int(task.data.get("mb_per_step", 20))
    for _ in range(int(task.data.get("max_mb", 1024)) // step):
        # bytearray(n) is zero-filled by calloc and may stay unmapped: touch it to make it resident.
        chunk = bytearray(step * 2**20)
        chunk[::4096] = b"x" * len(chunk[::4096])
        _hoard.append(chunk)
        time.sleep(0.05)
    time.sleep(3600)  # over the cap without being killed: the limit did not work


def segfault(task: Task) -> None:
    """Reads address 0: the process dies of SIGSEGV."""
    import ctypes

    ctypes.string_at(0)


def abort(task: Task) -> None:
    """Calls abort(): the process dies of SIGABRT."""
    os.abort()


def returns(task: Task) -> object:
    """Returns data['value'] (what the task's result should be)."""
    return task.data.get("value")


async def returns_async(task: Task) -> object:
    """Returns data['value'], or something JSON cannot hold when data['unfit'] names it."""
    unfit: dict[str, object] = {
        "set": {1, 2},
        "nan": float("nan"),
        "nul": {"text": "a\x00b"},
        "surrogate": "\ud800",
        "large": "x" * int(task.data.get("size", 0)),
    }
    return unfit[task.data["unfit"]] if "unfit" in task.data else task.data.get("value")


def asks_retry(task: Task) -> None:
    """Raises Retry(after_seconds=data['after']) until attempt data['until'] (default: always)."""
    from asynctask import Retry

    if task.attempts < int(task.data.get("until", 10**6)):
        raise Retry(after_seconds=float(task.data.get("after", 0)), reason="not yet")


async def asks_cancel(task: Task) -> None:
    """Raises Cancel with a reason."""
    from asynctask import Cancel

    raise Cancel("nothing to do for this account")


async def cancellable(task: Task) -> str:
    """Sleeps data['seconds'] (default 60); if cancelled, records when in table `cancels`."""
    try:
        await asyncio.sleep(float(task.data.get("seconds", 60)))
    except asyncio.CancelledError:
        at = time.time()  # before connecting: the record's own connection takes milliseconds
        conn = psycopg2.connect(os.environ["ASYNCTASK_TEST_RECORD_DSN"])
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO cancels (task_id, at, pid) VALUES (%s, to_timestamp(%s), %s)",
                (task.id, at, os.getpid()),
            )
        conn.close()
        raise
    return "finished"


def blocking(task: Task) -> str:
    """Blocks its thread for data['seconds'] (default 1), then returns a value."""
    time.sleep(float(task.data.get("seconds", 1)))
    return "finished"
