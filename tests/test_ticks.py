"""The per-process grid that periodic work sleeps on (workers/ticks.py)."""

from __future__ import annotations

import asyncio

import pytest

from asynctask.workers.ticks import Ticks


async def test_periods_of_one_grid_meet_on_the_same_instants() -> None:
    now = asyncio.get_running_loop().time()
    ticks = Ticks(origin=now - 0.25)  # the worker started a quarter of a second ago
    second, two, five = ticks.next(1.0), ticks.next(2.0), ticks.next(5.0)
    assert second == pytest.approx(now + 0.75)
    assert two == pytest.approx(now + 1.75)
    assert five == pytest.approx(now + 4.75)
    # The same floating-point instant, not merely close: the loop fires them in one wake-up.
    assert ticks.next(2.0) == ticks.origin + 2 * 1.0 == two
    assert ticks.next(5.0) - ticks.origin == 5 * 1.0


async def test_the_next_point_is_never_now_and_never_more_than_a_period_away() -> None:
    loop = asyncio.get_running_loop()
    ticks = Ticks(origin=loop.time() - 0.123)
    for period in (0.05, 0.2, 1.0, 7.5):
        now = loop.time()
        point = ticks.next(period)
        assert now < point <= now + period + 1e-9


async def test_the_origin_is_where_it_is_first_used() -> None:
    ticks = Ticks()
    assert ticks.origin is None
    before = asyncio.get_running_loop().time()
    point = ticks.next(10.0)
    assert ticks.origin is not None and before <= ticks.origin
    assert point == ticks.origin + 10.0


async def test_sleep_lasts_until_the_next_point_not_a_whole_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    asked: list[float] = []

    async def sleep(delay: float) -> None:
        asked.append(delay)

    ticks = Ticks(origin=loop.time() - 0.04)  # 10 ms before the grid point at 0.05
    monkeypatch.setattr(asyncio, "sleep", sleep)
    await ticks.sleep(0.05)
    assert 0 < asked[0] <= 0.01 + 1e-9
