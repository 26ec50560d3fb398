"""Plain-function handlers run a claim's rows in the handler thread (workers/plain.py).

No database here: the run's rows are made by hand and its outcomes collected from `record`, so
each rule of the thread hand-off (order, stopping between rows, timeouts, the shutdown grace,
errors of every kind) is checked on its own. tests/test_worker.py runs the same path end to end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asynctask.core.lifecycle import Outcome
from asynctask.core.models import Priority, State, Task
from asynctask.workers.attempt import AttemptRunner
from asynctask.workers.execute import TaskExecutor
from asynctask.workers.link import SlotLink
from asynctask.workers.plain import PlainRun
from asynctask.workers.registry import Handler
from asynctask.workers.report import TaskReport
from asynctask.workers.slots import Slot
from tests.conftest import make_config

SLOT = Slot("high_1", Priority.HIGH)
TOKEN = "7d6f3c1e-0000-4000-8000-000000000001"


def plain(function: Callable[[Task], Any], timeout: float = 30.0) -> Handler:
    return Handler(function, is_async=False, timeout_seconds=timeout)


def row(task_id: int, type_: str = "work", data: str = "{}") -> dict[str, Any]:
    return {"id": task_id, "type": type_, "attempts": 1, "max_attempts": 3, "data": data}


@pytest.fixture
def attempts() -> Iterator[AttemptRunner]:
    runner = AttemptRunner(shutdown_timeout=30.0, thread_name="handler-test")
    yield runner
    runner.close()


def executor(attempts: AttemptRunner, handlers: dict[str, Handler]) -> TaskExecutor:
    config = make_config("postgresql://nobody@127.0.0.1/nothing")
    link = SlotLink(multiprocessing.get_context("spawn"), SLOT)
    return TaskExecutor(config, link, handlers, attempts, TaskReport(SLOT.name, None))


async def run(runner: PlainRun, rows: list[dict[str, Any]]) -> tuple[int, list[Outcome]]:
    recorded: list[Outcome] = []

    async def record(outcome: Outcome) -> None:
        recorded.append(outcome)

    started = await asyncio.wait_for(runner.run(rows, TOKEN, record), 10)
    return started, recorded


async def test_every_row_runs_in_order_in_one_thread_and_each_outcome_is_recorded(
    attempts: AttemptRunner,
) -> None:
    seen: list[tuple[int, str]] = []

    def work(task: Task) -> int:
        seen.append((task.id, threading.current_thread().name))
        if task.data.get("fail"):
            raise ValueError("no")
        return task.id * 10

    tasks = executor(attempts, {"work": plain(work)})
    rows = [row(1), row(2, data='{"fail": true}'), row(3, "nope"), row(4, data="[1]"), row(5)]
    started, recorded = await run(PlainRun(tasks, attempts, lambda: True), rows)
    assert started == 5
    assert [t for t, _ in seen] == [1, 2, 5]
    assert {name for _, name in seen} == {"handler-test_0"}  # the worker's one handler thread
    assert [o.task_id for o in recorded] == [1, 2, 3, 4, 5]
    states = [o.state for o in recorded]
    assert states == [State.COMPLETED, State.RETRYING, State.FAILED, State.FAILED, State.COMPLETED]
    assert recorded[0].result == "10" and recorded[4].result == "50"
    assert recorded[1].error is not None and recorded[1].error.startswith("ValueError: no")
    assert "no handler is registered for type 'nope'" in str(recorded[2].error)
    assert "its data is a JSON list, not an object" in str(recorded[3].error)


async def test_the_thread_stops_between_rows_when_it_may_not_go_on(
    attempts: AttemptRunner,
) -> None:
    ran: list[int] = []
    allowed = {"rows": 2}

    def work(task: Task) -> None:
        ran.append(task.id)

    def keep_going() -> bool:
        allowed["rows"] -= 1
        return allowed["rows"] >= 0

    tasks = executor(attempts, {"work": plain(work)})
    started, recorded = await run(
        PlainRun(tasks, attempts, keep_going), [row(i) for i in (1, 2, 3)]
    )
    assert started == 2 and ran == [1, 2] and [o.task_id for o in recorded] == [1, 2]


async def test_a_handler_past_its_timeout_is_abandoned_and_the_rest_left_unstarted(
    attempts: AttemptRunner,
) -> None:
    release, returned = threading.Event(), threading.Event()
    ran: list[int] = []

    def work(task: Task) -> None:
        ran.append(task.id)
        if task.id == 2:
            release.wait(5)  # a thread cannot be interrupted: only let go after the test
            returned.set()

    tasks = executor(attempts, {"work": plain(work, timeout=0.2)})
    runner = PlainRun(tasks, attempts, lambda: not attempts.stuck)
    started, recorded = await run(runner, [row(1), row(2), row(3)])
    assert not returned.is_set()  # abandoned while it still ran
    release.set()
    assert started == 2 and attempts.stuck
    assert [(o.task_id, o.state) for o in recorded] == [
        (1, State.COMPLETED),
        (2, State.RETRYING),
    ]
    assert "TimeoutError: attempt exceeded its timeout of 0.2 s" in str(recorded[1].error)
    returned.wait(5)
    await asyncio.sleep(0.05)  # the abandoned thread returned: nothing more is recorded or run
    assert ran == [1, 2] and len(recorded) == 2


async def test_a_stop_cuts_a_plain_handler_off_after_the_grace_period(
    attempts: AttemptRunner,
) -> None:
    release = threading.Event()

    def work(task: Task) -> None:
        release.wait(5)

    tasks = executor(attempts, {"work": plain(work)})
    runner = PlainRun(tasks, attempts, lambda: attempts.stop_deadline is None)
    attempts.shutdown_timeout = 0.2
    asyncio.get_running_loop().call_later(0.1, setattr, attempts, "stop_deadline",
                                          time.monotonic() + 0.3)  # fmt: skip
    started, recorded = await run(runner, [row(1), row(2)])
    release.set()
    assert started == 1 and attempts.stuck
    assert "attempt cut off after shutdown_timeout_seconds = 0.2" in str(recorded[0].error)


async def test_system_exit_from_a_handler_ends_its_attempt_not_the_run(
    attempts: AttemptRunner,
) -> None:
    def work(task: Task) -> None:
        if task.id == 1:
            raise SystemExit(3)

    tasks = executor(attempts, {"work": plain(work)})
    started, recorded = await run(PlainRun(tasks, attempts, lambda: True), [row(1), row(2)])
    assert started == 2
    assert [o.state for o in recorded] == [State.RETRYING, State.COMPLETED]
    assert str(recorded[0].error).startswith("SystemExit: 3")


async def test_a_defect_in_the_thread_is_raised_in_the_loop(
    attempts: AttemptRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = executor(attempts, {"work": plain(lambda task: None)})

    def broken(*args: Any) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(tasks, "prepare", broken)
    with pytest.raises(KeyError, match="a bug of ours"):
        await run(PlainRun(tasks, attempts, lambda: True), [row(1)])


async def test_a_task_cancelled_while_its_plain_handler_ran_writes_no_outcome(
    attempts: AttemptRunner,
) -> None:
    tasks = executor(attempts, {"work": plain(lambda task: tasks.cancels.request(task.id))})
    started, recorded = await run(PlainRun(tasks, attempts, lambda: True), [row(1), row(2)])
    assert started == 2 and recorded == []
