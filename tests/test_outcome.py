"""Pure tests: backoff functions, the outcome-to-next-state function, error descriptions."""

from __future__ import annotations

import pytest

from asynctask.workers import backoff
from asynctask.workers.outcome import MAX_ERROR_CHARS, Next, describe_error, next_state


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


def test_jitters_stay_in_their_ranges() -> None:
    assert backoff.full_jitter(1000, lambda: 0.0) == 0
    assert backoff.full_jitter(1000, lambda: 0.999) == 999
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


def _next(error: BaseException | None, attempts: int, max_attempts: int, **kw: object) -> Next:
    settings: dict[str, object] = {"strategy": "fixed", "base_ms": 1000, "cap_ms": 60_000}
    settings.update(kw)
    return next_state(error, attempts, max_attempts, **settings)  # type: ignore[arg-type]


def test_success_completes() -> None:
    assert _next(None, 5, 5) == Next("completed")


def test_failure_retries_until_attempts_are_spent() -> None:
    assert _next(ValueError(), 1, 3) == Next("retrying", 1000)
    assert _next(ValueError(), 2, 3) == Next("retrying", 1000)
    assert _next(ValueError(), 3, 3) == Next("failed")
    assert _next(ValueError(), 4, 3) == Next("failed")


def test_permanent_failure_never_retries() -> None:
    assert _next(ValueError(), 1, 5, permanent=True) == Next("failed")


def test_exponential_retries() -> None:
    nxt = _next(ValueError(), 4, 10, strategy="exponential", base_ms=100, rand=lambda: 1.0)
    assert nxt == Next("retrying", 800)


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
