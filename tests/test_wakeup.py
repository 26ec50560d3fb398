"""Which notifications wake a worker at once, and which a moment later."""

from __future__ import annotations

import asyncio

import pytest

from workers.wakeup import Wakeup

FOLLOW = 0.05


def _wakeup(index: int = 1, pool_size: int = 4) -> Wakeup:
    return Wakeup(asyncio.Event(), index, pool_size, follow=FOLLOW)


@pytest.mark.parametrize(
    ("payload", "index", "pool_size"),
    [
        ("13", 1, 4),  # 13 % 4 == 1: this worker's turn
        ("", 1, 4),  # no id (batch, sweep, reconnect): everyone looks
        ("not-a-number", 1, 4),
        ("²", 1, 4),  # a digit to str.isdigit, not to int()
        ("12", 0, 1),  # alone in its pool
    ],
)
async def test_wakes_at_once(payload: str, index: int, pool_size: int) -> None:
    wakeup = _wakeup(index, pool_size)
    wakeup.notified(payload)
    assert wakeup.event.is_set()


async def test_a_siblings_task_wakes_it_after_the_follow_delay() -> None:
    wakeup = _wakeup()
    loop = asyncio.get_running_loop()
    started = loop.time()
    wakeup.notified("12")
    wakeup.notified("14")  # one pending wake-up, not two
    assert not wakeup.event.is_set()
    await asyncio.wait_for(wakeup.event.wait(), 1)
    assert loop.time() - started >= FOLLOW * 0.9


async def test_its_own_task_cancels_the_pending_follow() -> None:
    wakeup = _wakeup()
    wakeup.notified("12")
    wakeup.notified("13")
    assert wakeup.event.is_set()
    wakeup.event.clear()
    await asyncio.sleep(FOLLOW * 2)
    assert not wakeup.event.is_set()  # the cancelled follow-up did not fire later
