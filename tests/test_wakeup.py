"""Which notifications a pool's leader takes alone, and how it wakes its siblings otherwise."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Iterator

import pytest

from asynctask.workers.slots import slots_for
from asynctask.workers.wakeup import WakePipes, Wakeup, pool_pipes

CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def pipes() -> Iterator[dict[str, WakePipes]]:
    ends = pool_pipes(CTX, slots_for({"high": 3, "normal": 1, "low": 2}))
    yield ends
    for pipe in ends.values():
        for end in (pipe.mine, *pipe.siblings):
            if end is not None:
                end.close()


def nudges(pipe: WakePipes) -> int:
    """How many nudges wait in a sibling's pipe (reads them)."""
    assert pipe.mine is not None
    try:
        return len(os.read(pipe.mine.fileno(), 4096))
    except BlockingIOError:
        return 0


def test_each_leader_holds_its_siblings_ends_and_each_sibling_its_own(
    pipes: dict[str, WakePipes],
) -> None:
    assert sorted(pipes) == ["high_1", "high_2", "high_3", "low_1", "low_2", "normal_1"]
    assert len(pipes["high_1"].siblings) == 2 and pipes["high_1"].mine is None
    assert len(pipes["low_1"].siblings) == 1
    assert pipes["normal_1"] == WakePipes()  # alone in its pool: nobody to wake
    assert all(
        pipes[name].mine is not None and not pipes[name].siblings
        for name in ("high_2", "high_3", "low_2")
    )
    Wakeup(asyncio.Event(), pipes["low_1"]).wake_siblings()
    assert (nudges(pipes["low_2"]), nudges(pipes["high_2"]), nudges(pipes["high_3"])) == (1, 0, 0)


def test_an_idle_leader_takes_a_single_task_alone(pipes: dict[str, WakePipes]) -> None:
    leader = Wakeup(asyncio.Event(), pipes["high_1"])
    leader.idle = True
    leader.notified("42")
    assert leader.event.is_set()
    assert nudges(pipes["high_2"]) == nudges(pipes["high_3"]) == 0


@pytest.mark.parametrize(
    ("payload", "idle", "already_woken"),
    [
        ("42", False, False),  # busy: the task must not wait for it
        ("42", True, True),  # about to claim for an earlier task: this one is a second
        ("", True, False),  # a batch, a sweep, a bare NOTIFY from SQL: any number of tasks
        ("not-a-number", True, False),
        ("²", True, False),  # a digit to str.isdigit, not an id
    ],
)
def test_otherwise_the_leader_wakes_its_siblings_too(
    pipes: dict[str, WakePipes], payload: str, idle: bool, already_woken: bool
) -> None:
    leader = Wakeup(asyncio.Event(), pipes["high_1"])
    leader.idle = idle
    if already_woken:
        leader.now()
    leader.notified(payload)
    assert leader.event.is_set()
    assert nudges(pipes["high_2"]) == nudges(pipes["high_3"]) == 1


def test_a_full_pipe_does_not_stop_the_leader(pipes: dict[str, WakePipes]) -> None:
    leader = Wakeup(asyncio.Event(), pipes["low_1"])
    for _ in range(100_000):  # far past a pipe's 64 KiB: the writes that do not fit are dropped
        leader.wake_siblings()
    assert nudges(pipes["low_2"]) > 0


async def test_a_sibling_wakes_on_a_nudge_once_for_many(pipes: dict[str, WakePipes]) -> None:
    leader = Wakeup(asyncio.Event(), pipes["high_1"])
    sibling = Wakeup(asyncio.Event(), pipes["high_2"])
    sibling.start()
    try:
        leader.wake_siblings()
        leader.wake_siblings()
        await asyncio.wait_for(sibling.event.wait(), 1)
        sibling.event.clear()
        await asyncio.sleep(0.05)
        assert not sibling.event.is_set()  # both nudges were read by the one wake-up
        leader.wake_siblings()
        await asyncio.wait_for(sibling.event.wait(), 1)
    finally:
        sibling.close()
    leader.wake_siblings()
    await asyncio.sleep(0.05)
    assert nudges(pipes["high_2"]) == 1  # after close() nudges wait in the pipe, unread


async def test_a_leader_has_nothing_to_read() -> None:
    leader = Wakeup(asyncio.Event())
    leader.start()
    leader.close()
    leader.notified("")  # no siblings: wakes only itself
    assert leader.event.is_set()
