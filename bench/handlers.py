"""Handlers used only by the benchmarks."""

from __future__ import annotations

import asyncio
import random
import socket
import time

from asynctask.core.models import Task

_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


async def stamp(task: Task) -> None:
    """Send "<id> <wall clock>" to the benchmark's UDP port the moment the handler starts."""
    _sock.sendto(f"{task.id} {time.time()}".encode(), ("127.0.0.1", int(task.data["port"])))


async def noop(task: Task) -> None:
    """Do nothing: measures the queue, not the work."""


def plain_noop(task: Task) -> None:
    """Do nothing, as a plain function: what most users write (`def handle(task)`)."""


async def work(task: Task) -> None:
    """Take 1 to 3 ms, waiting as a handler that calls another service does (the soak's work)."""
    await asyncio.sleep(random.uniform(0.001, 0.003))


async def hold(task: Task) -> None:
    """Sleep data['ms'], then send "<id> <wall clock>" to data['port'] as the handler returns."""
    await asyncio.sleep(float(task.data.get("ms", 0)) / 1000)
    _sock.sendto(f"{task.id} {time.time()}".encode(), ("127.0.0.1", int(task.data["port"])))
