"""How an attempt's result becomes the task's next state: one small pure function, plus errors."""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass

from asynctask.workers import backoff

MAX_ERROR_CHARS = 4000
TRACEBACK_FRAMES = 5


@dataclass(frozen=True, slots=True)
class Next:
    """The next state of a task after one attempt, and when it is due again if retrying."""

    state: str  # completed | retrying | failed
    delay_ms: int = 0


def next_state(
    error: BaseException | None,
    attempts: int,
    max_attempts: int,
    *,
    strategy: str,
    base_ms: int,
    cap_ms: int,
    permanent: bool = False,
    rand: backoff.Random = random.random,
) -> Next:
    """Completed on success; else retrying with a backoff, or failed once attempts are spent."""
    if error is None:
        return Next("completed")
    if permanent or attempts >= max_attempts:
        return Next("failed")
    delay = backoff.retry_delay(
        attempts, strategy=strategy, base_ms=base_ms, cap_ms=cap_ms, rand=rand
    )
    return Next("retrying", delay)


def describe_error(error: BaseException, frames: int = TRACEBACK_FRAMES) -> str:
    """`Type: message` plus the last few traceback frames, bounded for the last_error column."""
    head = f"{type(error).__name__}: {error}".rstrip(": ")
    stack = traceback.extract_tb(error.__traceback__)[-frames:]
    lines = [head]
    if stack:
        lines.append("Traceback (most recent call last, last frames):")
        lines.extend(line.rstrip("\n") for line in traceback.format_list(stack))
    text = "\n".join(lines)
    if len(text) > MAX_ERROR_CHARS:
        # Keep the head (what went wrong) and the tail (where): the middle matters least.
        keep = MAX_ERROR_CHARS // 2 - 10
        text = text[:keep] + "\n[...]\n" + text[-keep:]
    return text
