"""The soak (bench/soak.py): a reduced run on a cluster of its own, and the verdict's arithmetic.

The reduced run asserts no timing: that sampling works, every created task finishes, retention
deletes rows, and a server with autovacuum on draws no warning. The verdict is checked on
synthetic series.
"""

from __future__ import annotations

import pytest

from bench.cluster import own_cluster
from bench.soak import POOL, Options, render, run_soak
from bench.soak_load import BUCKETS, bucket, bucket_top, histogram_percentile
from bench.soak_sample import Sample
from bench.soak_verdict import (
    Account,
    latency_check,
    memory_check,
    passed,
    size_check,
    tasks_check,
    verdict,
)

WORKERS = [f"{priority}_{n}" for priority, size in POOL.items() for n in range(1, size + 1)]


def test_a_reduced_soak_samples_finishes_every_task_and_prunes() -> None:
    options = Options(
        minutes=0.5,
        sample_seconds=2,
        rate=100,
        capacity_tasks=2000,
        capacity_runs=1,
        retention_minutes=5 / 60,
        warmup_minutes=0.1,
        span_minutes=0.1,
        quiet=True,
    )
    with own_cluster() as cluster:
        result = run_soak(cluster, options)
    print("\n" + render(result))
    samples = result.samples
    assert len(samples) == 15 and [s.t for s in samples] == sorted(s.t for s in samples)
    assert result.capacity_runs[0] > 0 and result.rate == 100
    for sample in samples:
        assert set(WORKERS) | {"supervisor", "api"} <= set(sample.rss_bytes)
        assert all(rss > 0 for rss in sample.rss_bytes.values())
        assert {"tasks_pkey", "tasks_due_idx", "tasks_running_idx"} <= set(sample.index_bytes)
        assert sample.total_bytes >= sample.heap_bytes + sum(sample.index_bytes.values())
    # CPU needs two readings: from the second sample on, for every process and both groups.
    assert {"api", "high_1", "postgres (all)", "load generator"} <= set(samples[1].cpu_percent)
    assert all(s.post_p50_ms is not None and s.post_p99_ms is not None for s in samples[1:])
    finished = [ms for s in samples for ms in s.latencies_ms]
    assert finished and all(ms > 0 for ms in finished)
    # Creates still in flight at the last sample are answered after it, and counted in the account.
    assert 0 < sum(s.creates for s in samples) <= result.account.created
    # Every created task completed; the ones gone were deleted by retention, which ran.
    assert result.account.errors == 0 and result.account.not_completed == 0
    assert result.account.pruned > 0 and samples[-1].deleted > 0
    assert result.checks[-1].name == "tasks" and result.checks[-1].passed
    # The cluster runs with autovacuum on: asynctask must not warn about it (nor about anything).
    assert result.extra["autovacuum_warning"] is False
    assert result.extra["log_problems"] == [], result.log
    document = result.as_json()
    assert document["samples"][0].keys() >= {"t", "p99_ms", "due", "dead_tuples", "rss_bytes"}
    assert "latencies_ms" not in document["samples"][0]


def test_the_post_latency_histogram_reads_percentiles_to_a_bucket() -> None:
    counts = [0] * BUCKETS
    for ms in [2.0] * 98 + [40.0, 900.0]:
        counts[bucket(ms)] += 1
    p50, p99 = histogram_percentile(counts, 0.5), histogram_percentile(counts, 0.99)
    assert p50 is not None and 2.0 <= p50 <= 2.0 * 1.07
    assert p99 is not None and 40.0 <= p99 <= 40.0 * 1.07
    assert histogram_percentile([0] * BUCKETS, 0.99) is None
    assert (
        bucket(0.01) == 0
        and bucket(10**6) == BUCKETS - 1
        and bucket_top(BUCKETS - 1) == pytest.approx(30_000)
    )


def _series(
    n: int = 30,
    step: float = 60,
    latency: list[float] | None = None,
    size: list[int] | None = None,
    rss: list[int] | None = None,
    pruned_from: int = 3,
) -> list[Sample]:
    """n samples `step` s apart: latencies, total size, one worker's RSS, deletions from index."""
    return [
        Sample(
            t=(i + 1) * step,
            latencies_ms=[latency[i] if latency else 5.0] * 100,
            total_bytes=size[i] if size else 100 * 2**20,
            deleted=1000 * i if i >= pruned_from else 0,
            rss_bytes={"high_1": rss[i] if rss else 40 * 2**20, "api": 50 * 2**20},
            pids={"high_1": 11, "api": 12},
        )
        for i in range(n)
    ]


def test_latency_compares_the_pooled_p99_of_the_first_and_last_spans() -> None:
    steady = latency_check(_series(latency=[10.0] * 5 + [20.0] * 20 + [14.0] * 5), span_s=300)
    assert steady.passed and steady.value == pytest.approx(1.4)
    worse = latency_check(_series(latency=[10.0] * 25 + [16.0] * 5), span_s=300)
    assert not worse.passed and worse.value == pytest.approx(1.6)
    # One slow window among five is 20 % of the pooled tasks: it sets the span's p99.
    spike = latency_check(_series(latency=[10.0] * 25 + [10.0] * 4 + [30.0]), span_s=300)
    assert not spike.passed and spike.value == pytest.approx(3.0)
    empty = _series()
    for sample in empty[-5:]:
        sample.latencies_ms = []
    assert not latency_check(empty, span_s=300).passed


def test_size_must_stop_growing_in_the_last_third() -> None:
    mib = 2**20
    # Grows while retention fills up, then a sawtooth (vacuum frees, new rows reuse): no growth.
    sawtooth = [mib * (10 + 3 * i) for i in range(10)] + [mib * (40 + i % 3) for i in range(20)]
    flat = size_check(_series(size=sawtooth))
    assert flat.passed and flat.value == 0.0  # the peak of 42 MiB is never passed
    # A leak: 1 % a minute from minute 11 on. The last third's peak (at 30 min, +19 %) is 10.2 %
    # above the peak before it (at 19 min, +8 %).
    leaking = sawtooth[:10] + [int(mib * 40 * (1 + 0.01 * i)) for i in range(20)]
    check = size_check(_series(size=leaking))
    assert not check.passed and check.value == pytest.approx(1.19 / 1.08 - 1, abs=0.001)
    # Shrinking after a spike of creates (fewer rows kept) is no growth.
    spiked = [*sawtooth[:15], mib * 60, *sawtooth[16:]]
    assert size_check(_series(size=spiked)).value == pytest.approx(42 / 60 - 1, rel=0.01)
    late = size_check(_series(size=sawtooth, pruned_from=25))
    assert not late.passed and "retention deleted nothing" in late.detail


def test_memory_counts_growth_after_warm_up_only() -> None:
    mib = 2**20
    warming = [30 * mib] * 4 + [40 * mib] * 26  # grows before warm-up ends (t = 300 s): fine
    assert memory_check(_series(rss=warming), warmup_s=300).passed
    leaking = [40 * mib] * 20 + [int(40 * mib * 1.15)] * 10
    check = memory_check(_series(rss=leaking), warmup_s=300)
    assert not check.passed and "high_1 grew +15.0%" in check.detail
    assert check.value == pytest.approx(0.15)
    replaced = _series()
    replaced[20].pids = {"high_1": 99, "api": 12}
    check = memory_check(replaced, warmup_s=300)
    assert not check.passed and "high_1 was replaced after warm-up" in check.detail


def test_tasks_pass_only_when_every_create_completed() -> None:
    assert tasks_check(Account(created=100, errors=0, not_completed=0, pruned=60)).passed
    assert not tasks_check(Account(created=100, errors=1, not_completed=0, pruned=60)).passed
    assert not tasks_check(Account(created=100, errors=0, not_completed=2, pruned=60)).passed
    assert not tasks_check(Account(created=0, errors=0, not_completed=0, pruned=0)).passed


def test_the_verdict_passes_only_when_all_four_do() -> None:
    good = Account(created=100, errors=0, not_completed=0, pruned=60)
    checks = verdict(_series(), good, warmup_s=300, span_s=300)
    assert [c.name for c in checks] == ["latency", "size", "memory", "tasks"]
    assert passed(checks)
    bad = verdict(_series(latency=[5.0] * 25 + [10.0] * 5), good, warmup_s=300, span_s=300)
    assert not passed(bad) and [c.passed for c in bad] == [False, True, True, True]
