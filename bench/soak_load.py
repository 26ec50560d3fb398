"""The soak's load: single creates over HTTP at a steady rate, from a process of its own.

Open loop: the k-th create is due at k / rate seconds, whether or not earlier ones were answered,
so a slow API shows as latency, not as a lower rate. At most MAX_IN_FLIGHT requests are pending: a
create that comes due while all of them are taken is skipped and counted as missed, never sent
later, so the offered load never rises above the rate to catch up (no bursts after a slow spell).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import multiprocessing.synchronize
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from asynctask.core.loops import new_event_loop

# 4 : 2 : 1, as the default pool (high 4, normal 2, low 1): every worker gets the same share.
PRIORITY_CYCLE = ("high", "high", "high", "high", "normal", "normal", "low")
MAX_IN_FLIGHT = 64
TICK_SECONDS = 0.005
# POST latency histogram: BUCKETS log-spaced buckets from 0.1 ms to 30 s (6.5 % wide each).
BUCKETS = 200
_LOWEST_MS, _HIGHEST_MS = 0.1, 30_000.0
_WIDTH = math.log(_HIGHEST_MS / _LOWEST_MS) / BUCKETS


def bucket(ms: float) -> int:
    """The histogram bucket of a latency in ms."""
    return min(BUCKETS - 1, max(0, int(math.log(max(ms, _LOWEST_MS) / _LOWEST_MS) / _WIDTH)))


def bucket_top(index: int) -> float:
    """The upper bound (ms) of a bucket."""
    return _LOWEST_MS * math.exp(_WIDTH * (index + 1))


def histogram_percentile(counts: list[int], fraction: float) -> float | None:
    """The upper bound of the bucket holding the `fraction` quantile; None if empty."""
    total = sum(counts)
    if not total:
        return None
    rank, seen = math.ceil(fraction * total), 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return round(bucket_top(index), 2)
    return None  # pragma: no cover - seen reaches total


@dataclass
class Counters:
    """Shared with the sampling process: creates answered 201, the rest, POST latencies."""

    ok: Any  # multiprocessing.Value("q")
    errors: Any
    missed: Any  # creates not sent: MAX_IN_FLIGHT were pending when they came due
    latency: Any  # multiprocessing.Array("q", BUCKETS): answered POSTs per latency bucket

    @classmethod
    def make(cls, context: Any) -> Counters:
        """Counters in shared memory of this multiprocessing context."""
        value = context.Value
        return cls(value("q", 0), value("q", 0), value("q", 0), context.Array("q", BUCKETS))

    def read(self) -> tuple[int, int, int]:
        """(ok, errors, missed) so far."""
        return int(self.ok.value), int(self.errors.value), int(self.missed.value)

    def histogram(self) -> list[int]:
        """POSTs per latency bucket so far."""
        return list(self.latency[:])


def run_load(
    base: str,
    rate: float,
    seconds: float,
    counters: Counters,
    stop: multiprocessing.synchronize.Event,
) -> None:
    """Process entry point: create `rate` tasks per second for `seconds` (or until `stop`)."""
    loop = new_event_loop()
    try:
        loop.run_until_complete(_generate(base, rate, seconds, counters, stop))
    finally:
        loop.close()


async def _generate(
    base: str,
    rate: float,
    seconds: float,
    counters: Counters,
    stop: multiprocessing.synchronize.Event,
) -> None:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started, sent = loop.time(), 0
        while not stop.is_set() and (now := loop.time()) < started + seconds:
            due = int((now - started) * rate)
            while sent < due and not slots.locked():
                await slots.acquire()
                task = asyncio.create_task(_create(session, base, sent, counters, slots))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            if sent < due:  # every slot taken: these creates are missed, not sent in a burst later
                counters.missed.value += due - sent
                sent = due
            await asyncio.sleep(TICK_SECONDS)
        if pending:
            await asyncio.gather(*pending)


async def _create(
    session: aiohttp.ClientSession,
    base: str,
    k: int,
    counters: Counters,
    slots: asyncio.Semaphore,
) -> None:
    body = {"type": "work", "priority": PRIORITY_CYCLE[k % len(PRIORITY_CYCLE)]}
    sent = time.perf_counter()
    try:
        async with session.post(f"{base}/api/tasks", json=body) as response:
            await response.read()
            created = response.status == 201
    except (aiohttp.ClientError, TimeoutError):
        created = False
    finally:
        slots.release()
    # One writer (this process): the shared values' own locks are enough.
    counter = counters.ok if created else counters.errors
    counter.value += 1
    if created:
        counters.latency[bucket((time.perf_counter() - sent) * 1000)] += 1


def start_load(
    base: str, rate: float, seconds: float
) -> tuple[multiprocessing.process.BaseProcess, Counters, multiprocessing.synchronize.Event]:
    """Start the load in a spawned process; returns it, its counters and its stop event."""
    context = multiprocessing.get_context("spawn")
    counters = Counters.make(context)
    stop = context.Event()
    process = context.Process(
        target=run_load, args=(base, rate, seconds, counters, stop), name="soak load", daemon=True
    )
    process.start()
    return process, counters, stop
