"""What a handler may raise to ask for an outcome: Retry(after_seconds=...) and Cancel(reason)."""

from __future__ import annotations

import pytest

import asynctask
from asynctask import Cancel, Retry, Task
from asynctask.core.control import MAX_RETRY_SECONDS
from asynctask.core.lifecycle import Decision, Event, RetryPolicy, decide
from asynctask.core.models import State
from tests.conftest import make_config
from tests.test_results import Cursor, _task
from tests.test_worker import insert, running, states_are
from tests.waiting import wait_until_async

FIXED = RetryPolicy("fixed", 1000, 60_000)


def test_the_package_exports_what_handlers_use() -> None:
    assert {"Task", "Retry", "Cancel"} <= set(asynctask.__all__)
    assert Task.__module__ == "asynctask.core.models"


def test_retry_checks_its_delay() -> None:
    assert Retry(after_seconds=1.5).delay_ms == 1500
    assert Retry().delay_ms == 0
    assert str(Retry(30, reason="rate limited")) == "retry requested in 30 s: rate limited"
    for bad in (-1, float("inf"), float("nan"), MAX_RETRY_SECONDS + 1, True, "5"):
        with pytest.raises(ValueError, match="after_seconds"):
            Retry(after_seconds=bad)  # type: ignore[arg-type]


def test_cancel_keeps_its_reason() -> None:
    assert str(Cancel("no account")) == "no account" and Cancel("x").reason == "x"
    assert str(Cancel()) == "cancelled by its handler"


def test_retry_spends_an_attempt_with_its_own_delay() -> None:
    assert decide(Event.RETRY_ASKED, 1, 3, FIXED, asked_delay_ms=42_000) == Decision(
        State.RETRYING, 42_000
    )
    assert decide(Event.RETRY_ASKED, 3, 3, FIXED, asked_delay_ms=42_000) == Decision(State.FAILED)
    # Without a delay of its own it waits like any failure.
    assert decide(Event.RETRY_ASKED, 1, 3, FIXED) == Decision(State.RETRYING, 1000)


def test_cancel_ends_the_task_whatever_attempts_remain() -> None:
    assert decide(Event.CANCEL_ASKED, 1, 10, FIXED) == Decision(State.CANCELLED)


async def test_handlers_ask_for_retry_and_cancel(database_url: str, sql: Cursor) -> None:
    config = make_config(database_url, timeout_milliseconds=100)
    later = insert(sql, "asks_retry", {"after": 3600}, max_attempts=5)
    soon = insert(sql, "asks_retry", {"after": 0, "until": 3}, max_attempts=5)
    spent = insert(sql, "asks_retry", {"after": 0}, max_attempts=2)
    cancel = insert(sql, "asks_cancel", max_attempts=5)
    async with running(config):
        await wait_until_async(states_are(sql, [soon], "completed"))
        await wait_until_async(states_are(sql, [spent], "failed"))
        await wait_until_async(states_are(sql, [cancel], "cancelled"))
        await wait_until_async(states_are(sql, [later], "retrying"))
    assert _task(sql, soon)["attempts"] == 3
    assert _task(sql, spent)["attempts"] == 2
    assert _task(sql, spent)["last_error"] == "Retry: retry requested in 0 s: not yet"
    row = _task(sql, cancel)
    assert row["attempts"] == 1 and row["last_error"] == "Cancel: nothing to do for this account"
    sql.execute(
        "SELECT extract(epoch FROM scheduled_at - updated_at), attempts FROM tasks WHERE id = %s",
        (later,),
    )
    delay, attempts = sql.fetchone() or (0, 0)
    assert 3599 <= delay <= 3601 and attempts == 1  # its own delay, not the configured 100 ms
