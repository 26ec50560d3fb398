"""Pure tests: backoff functions, the outcome-to-next-state function, error descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from asynctask.core import backoff
from asynctask.core.lifecycle import (
    TRANSITIONS,
    Decision,
    Event,
    RetryPolicy,
    decide,
    state_diagram,
)
from asynctask.core.models import State
from asynctask.workers.tracebacks import MAX_ERROR_CHARS, describe_error


def test_fixed_backoff_is_the_poll_interval() -> None:
    assert backoff.fixed(1000) == 1000
    assert backoff.retry_delay(7, strategy="fixed", base_ms=250, cap_ms=10) == 250


@pytest.mark.parametrize(
    ("attempt", "expected"), [(0, 100), (1, 100), (2, 200), (3, 400), (5, 1600), (6, 2000)]
)
def test_exponential_doubles_and_caps(attempt: int, expected: int) -> None:
    assert backoff.exponential(attempt, 100, 2000) == expected


def test_exponential_survives_huge_attempts() -> None:
    assert backoff.exponential(10_000, 1000, 300_000) == 300_000


def test_equal_jitter_stays_in_its_range() -> None:
    assert backoff.equal_jitter(1000, lambda: 0.0) == 500
    assert backoff.equal_jitter(1000, lambda: 1.0) == 1000


def test_exponential_retry_delay_uses_equal_jitter() -> None:
    delay = backoff.retry_delay(
        3, strategy="exponential", base_ms=100, cap_ms=10_000, rand=lambda: 0
    )
    assert delay == 200  # half of 400


def test_restart_delay() -> None:
    assert backoff.restart_delay(0) == 0.0
    assert backoff.restart_delay(1, rand=lambda: 1.0) == 0.5
    assert backoff.restart_delay(100, rand=lambda: 1.0) == 30.0
    assert 0.25 <= backoff.restart_delay(1) <= 0.5


FIXED = RetryPolicy("fixed", 1000, 60_000)


def _decide(event: Event, attempts: int, max_attempts: int, retry: RetryPolicy = FIXED) -> Decision:
    return decide(event, attempts, max_attempts, retry, rand=lambda: 1.0)


def test_a_returned_handler_completes_even_on_its_last_attempt() -> None:
    assert _decide(Event.RETURNED, 5, 5) == Decision(State.COMPLETED)
    assert _decide(Event.ALREADY_DONE, 1, 5) == Decision(State.COMPLETED)


@pytest.mark.parametrize(
    "event", [Event.RAISED, Event.TIMED_OUT, Event.WORKER_CRASHED, Event.LEASE_EXPIRED]
)
def test_a_spent_attempt_retries_until_attempts_are_spent(event: Event) -> None:
    assert _decide(event, 1, 3) == Decision(State.RETRYING, 1000)
    assert _decide(event, 2, 3) == Decision(State.RETRYING, 1000)
    assert _decide(event, 3, 3) == Decision(State.FAILED)
    assert _decide(event, 4, 3) == Decision(State.FAILED)


@pytest.mark.parametrize("event", [Event.UNKNOWN_TYPE, Event.UNDECODABLE])
def test_what_no_retry_can_fix_fails_at_once(event: Event) -> None:
    assert _decide(event, 1, 5) == Decision(State.FAILED)


def test_a_task_that_never_started_goes_back_as_it_was() -> None:
    assert _decide(Event.NOT_STARTED, 1, 5) == Decision(State.AVAILABLE, None, uncharge=True)
    assert _decide(Event.NOT_STARTED, 3, 5) == Decision(State.RETRYING, None, uncharge=True)
    # Even past max_attempts (a lowered limit): it was not run, so nothing is spent.
    assert _decide(Event.NOT_STARTED, 6, 5).uncharge


def test_exponential_backoff_for_every_retried_event() -> None:
    exponential = RetryPolicy("exponential", 100, 60_000)
    for event in (Event.RAISED, Event.WORKER_CRASHED, Event.LEASE_EXPIRED):
        assert _decide(event, 4, 10, exponential) == Decision(State.RETRYING, 800)


def test_every_decision_is_a_transition_of_the_diagram() -> None:
    moves = {(source, target) for source, target, _ in TRANSITIONS}
    for event in Event:
        for attempts in (1, 2, 5):
            decision = _decide(event, attempts, 5)
            assert (State.RUNNING, decision.state) in moves, (event, attempts)


def test_readme_shows_the_state_diagram_of_the_code() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "```mermaid\n" + state_diagram() + "\n```" in readme


def _raise_nested(depth: int) -> None:
    if depth == 0:
        raise KeyError("missing thing")
    _raise_nested(depth - 1)


def test_describe_error_has_type_message_and_a_short_traceback() -> None:
    try:
        _raise_nested(20)
    except KeyError as exc:
        text = describe_error(exc)
    assert text.startswith("KeyError: 'missing thing'")
    assert "Traceback" in text
    assert 1 <= text.count("in _raise_nested") <= 5  # the last frames only
    assert "in test_describe_error" not in text


def test_describe_error_without_traceback_or_message() -> None:
    assert describe_error(TimeoutError()) == "TimeoutError"


def test_describe_error_is_bounded() -> None:
    text = describe_error(RuntimeError("x" * 100_000))
    assert len(text) <= MAX_ERROR_CHARS
    assert text.startswith("RuntimeError: xxx")
    assert "[...]" in text
