"""Pure backoff functions: task retry delays, restart delays, reconnect delays.

Shaped like oban-py's `_backoff.py`: deterministic given the random draw, so each is tested alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Random = Callable[[], float]


def fixed(base_ms: int) -> int:
    """The original's rule: every retry waits `timeout_milliseconds`."""
    return base_ms


def exponential(attempt: int, base_ms: int, cap_ms: int) -> int:
    """base * 2^(attempt-1), capped; `attempt` counts from 1."""
    # Clamp the exponent first: 2**10_000 is a valid int but a pointless one.
    exponent = min(max(attempt, 1) - 1, 62)
    return int(min(base_ms * 2**exponent, cap_ms))


def equal_jitter(delay_ms: int, rand: Random = random.random) -> int:
    """In [delay/2, delay]: keeps at least half the wait while still spreading retries."""
    half = delay_ms / 2
    return int(half + half * rand())


def retry_delay(
    attempt: int,
    *,
    strategy: str,
    base_ms: int,
    cap_ms: int,
    rand: Random = random.random,
) -> int:
    """The wait before retrying after failed attempt number `attempt` (from 1)."""
    if strategy == "fixed":
        return fixed(base_ms)
    return equal_jitter(exponential(attempt, base_ms, cap_ms), rand)


def restart_delay(
    failures: int, base_ms: int = 500, cap_ms: int = 30_000, rand: Random = random.random
) -> float:
    """Seconds to wait before restarting a process (or reconnecting) after `failures` failures."""
    if failures <= 0:
        return 0.0
    return equal_jitter(exponential(failures, base_ms, cap_ms), rand) / 1000
