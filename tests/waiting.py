"""Waiting on a condition, not for a fixed time: the one wait_until, and its async twin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.02) -> T:
    """Call `check` until it returns something true, and return that; AssertionError at timeout."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return result


async def wait_until_async(check: Callable[[], object], timeout: float = 10.0) -> None:
    """As wait_until, without blocking the event loop the condition depends on."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
