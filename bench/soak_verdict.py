"""The soak's verdict, from its samples and its final account of tasks.

Four checks, each with its number:

- latency: the p99 of every task finished in the last `span` seconds is at most LATENCY_RATIO
  times the p99 of those finished in the first `span` seconds (tasks pooled, not windows averaged);
- size: retention has deleted rows before the last third of the run begins, and the largest
  table + index size (pg_total_relation_size) in the last third is less than SIZE_GROWTH above
  the largest between the first deletion and the last third. A table that stopped growing makes
  no new high (vacuum's sawtooth and the reuse of freed pages stay under the old peak); a leak of
  pages keeps making new ones. Peaks, not a fitted trend: the size follows the rows retention
  keeps, so a trend also follows every swing of the create rate;
- memory: no asynctask process's RSS, at any sample after warm-up, exceeds its RSS at the end of
  warm-up by more than RSS_GROWTH; a process replaced after warm-up fails the check (a restart
  would hide a leak);
- tasks: every create was answered 201 and every created task completed (none left due, running,
  retrying or failed after the drain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from bench.common import percentile

LATENCY_RATIO = 1.5
SIZE_GROWTH = 0.10
RSS_GROWTH = 0.10


class Point(Protocol):
    """What the verdict reads of a sample (bench.soak_sample.Sample has it)."""

    t: float
    latencies_ms: list[float]
    total_bytes: int
    deleted: int
    rss_bytes: dict[str, int]
    pids: dict[str, int]


@dataclass(frozen=True)
class Account:
    """The tasks at the end: creates answered 201 or not, what the table holds after the drain."""

    created: int
    errors: int
    not_completed: int  # rows of the soak in any state but completed
    pruned: int  # created - rows left: deleted by retention (only finished tasks are deleted)
    missed: int = 0  # creates the load skipped (the machine did not keep up): reported, not judged


@dataclass(frozen=True)
class Check:
    """One criterion: passed or not, its measured value and a line that explains it."""

    name: str
    passed: bool
    value: float | None
    detail: str


def verdict(
    samples: Sequence[Point], account: Account, warmup_s: float, span_s: float
) -> list[Check]:
    """The four checks over a soak's samples (t ascending) and its account."""
    return [
        latency_check(samples, span_s),
        size_check(samples),
        memory_check(samples, warmup_s),
        tasks_check(account),
    ]


def passed(checks: Sequence[Check]) -> bool:
    """True when every check passed."""
    return all(check.passed for check in checks)


def latency_check(samples: Sequence[Point], span_s: float) -> Check:
    """p99 of the last span within LATENCY_RATIO x the first span's."""
    end = samples[-1].t if samples else 0.0
    first = [ms for s in samples if s.t <= span_s for ms in s.latencies_ms]
    last = [ms for s in samples if s.t > end - span_s for ms in s.latencies_ms]
    if not first or not last:
        return Check("latency", False, None, "no tasks finished in the first or the last span")
    p99_first, p99_last = percentile(first, 0.99), percentile(last, 0.99)
    ratio = p99_last / p99_first
    detail = (
        f"p99 first {span_s / 60:g} min {p99_first:.2f} ms ({len(first)} tasks), last"
        f" {span_s / 60:g} min {p99_last:.2f} ms ({len(last)} tasks): {ratio:.2f}x"
        f" (at most {LATENCY_RATIO}x)"
    )
    return Check("latency", ratio <= LATENCY_RATIO, round(ratio, 3), detail)


def size_check(samples: Sequence[Point]) -> Check:
    """Retention kicked in before the last third, whose peak size is < SIZE_GROWTH above the
    peak between the first deletion and the last third."""
    if len(samples) < 3:
        return Check("size", False, None, "too few samples")
    end = samples[-1].t
    pruning = next((s.t for s in samples if s.deleted > 0), None)
    before = [s for s in samples if pruning is not None and pruning <= s.t < end * 2 / 3]
    third = [s for s in samples if s.t >= end * 2 / 3]
    if not before or not third:
        return Check("size", False, None, "retention deleted nothing before the last third")
    peak_before = max(s.total_bytes for s in before)
    peak_last = max(s.total_bytes for s in third)
    growth = peak_last / peak_before - 1
    detail = (
        f"first rows pruned at {pruning / 60:.1f} min; largest table + indexes"
        f" {peak_before / 2**20:.1f} MiB from then to {third[0].t / 60:.1f} min,"
        f" {peak_last / 2**20:.1f} MiB in the last third: {growth:+.1%}"
        f" (less than {SIZE_GROWTH:+.0%})"
    )
    return Check("size", growth < SIZE_GROWTH, round(growth, 4), detail)


def memory_check(samples: Sequence[Point], warmup_s: float) -> Check:
    """No process's RSS after warm-up above (1 + RSS_GROWTH) x its RSS at the end of warm-up."""
    after = [s for s in samples if s.t >= warmup_s]
    if len(after) < 2:
        return Check("memory", False, None, "no samples after warm-up")
    base = after[0]
    worst_name, worst, problems = "", -1.0, []
    for name, rss in base.rss_bytes.items():
        if any(s.pids.get(name) != base.pids.get(name) for s in after):
            problems.append(f"{name} was replaced after warm-up")
            continue
        growth = max(s.rss_bytes[name] for s in after) / rss - 1
        if growth > worst:
            worst_name, worst = name, growth
        if growth > RSS_GROWTH:
            problems.append(f"{name} grew {growth:+.1%}")
    detail = (
        f"{len(base.rss_bytes)} processes after {warmup_s / 60:g} min of warm-up; largest growth"
        f" {worst:+.1%} ({worst_name}; at most {RSS_GROWTH:.0%})"
    )
    if problems:
        detail += "; " + ", ".join(problems)
    return Check("memory", not problems, round(worst, 4), detail)


def tasks_check(account: Account) -> Check:
    """Every create answered 201, every created task completed."""
    detail = (
        f"{account.created} created ({account.errors} creates failed),"
        f" {account.not_completed} not completed, {account.pruned} pruned by retention"
    )
    ok = account.errors == 0 and account.not_completed == 0 and account.created > 0
    return Check("tasks", ok, float(account.not_completed + account.errors), detail)


def as_json(checks: Sequence[Check]) -> dict[str, Any]:
    """The checks for the --json file."""
    return {"passed": passed(checks), "checks": [asdict(check) for check in checks]}
