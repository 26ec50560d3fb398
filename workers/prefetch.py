"""How many tasks a worker claims per round trip: many when they are quick, one when they are slow.

A claim of N tasks saves N-1 round trips but holds N tasks that siblings cannot take. Doubling
while claims come back full (and dropping to 1 when one comes back short) sizes the batch to the
queue's depth; the time window sizes it to the work: a worker never holds more than about
WINDOW_SECONDS of expected work, so slow tasks are spread across all workers instead of queueing
behind one (the fairness concern in graphile-worker's local queue and Oban's prefetch notes).
"""

from __future__ import annotations

WINDOW_SECONDS = 0.1
_SMOOTHING = 0.2


def next_limit(limit: int, claimed: int, avg_task_seconds: float, ceiling: int) -> int:
    """The next claim's size, from this claim's size and yield and the average task duration."""
    grown = limit * 2 if claimed == limit else 1
    if avg_task_seconds > 0:
        ceiling = min(ceiling, max(1, int(WINDOW_SECONDS / avg_task_seconds)))
    return max(1, min(grown, ceiling))


def update_average(average: float, batch_seconds: float, tasks: int) -> float:
    """Exponentially smoothed seconds per task, updated after a batch of `tasks`."""
    if tasks <= 0:
        return average
    sample = batch_seconds / tasks
    return sample if average <= 0 else average + _SMOOTHING * (sample - average)
