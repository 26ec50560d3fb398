"""The soak (bench/soak.py), reduced: 30 s on a cluster of its own, run as the benchmark runs.

It asserts no timing: that sampling works, every created task finishes, retention deletes rows,
every check of the verdict is computed, and a server with autovacuum on draws no warning.
"""

from __future__ import annotations

from tests.processes import run_bench

WORKERS = [
    f"{p}_{n}" for p, size in (("high", 4), ("normal", 2), ("low", 1)) for n in range(1, size + 1)
]


def test_a_reduced_soak_samples_finishes_every_task_and_prunes() -> None:
    result = run_bench(
        "soak",
        *("--minutes", "0.5", "--sample-seconds", "2", "--rate", "100"),
        *("--capacity-tasks", "2000", "--capacity-runs", "1"),
        *("--retention-minutes", str(5 / 60), "--warmup-minutes", "0.1", "--span-minutes", "0.1"),
        "--no-charts",
        timeout=300,
    )
    samples = result["samples"]
    assert len(samples) == 15 and [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    assert result["capacity_runs"][0] > 0 and result["rate"] == 100
    for sample in samples:
        assert set(WORKERS) | {"supervisor", "api"} <= set(sample["rss_bytes"])
        assert all(rss > 0 for rss in sample["rss_bytes"].values())
        assert {"tasks_pkey", "tasks_due_idx", "tasks_running_idx"} <= set(sample["index_bytes"])
        assert sample["total_bytes"] >= sample["heap_bytes"] + sum(sample["index_bytes"].values())
        assert {"t", "p99_ms", "due", "dead_tuples"} <= set(sample)
    # CPU needs two readings: from the second sample on, for every process and both groups.
    assert {"api", "high_1", "postgres (all)", "load generator"} <= set(samples[1]["cpu_percent"])
    account = result["account"]
    # Creates still in flight at the last sample are answered after it, and counted in the account.
    assert 0 < sum(s["creates"] for s in samples) <= account["created"]
    # Every created task completed; the ones gone were deleted by retention, which ran.
    assert account["errors"] == 0 and account["not_completed"] == 0
    assert account["pruned"] > 0 and samples[-1]["deleted"] > 0
    checks = {check["name"]: check for check in result["verdict"]["checks"]}
    assert set(checks) == {"latency", "size", "memory", "tasks"} and checks["tasks"]["passed"]
    # The cluster runs with autovacuum on: asynctask must not warn about it (nor about anything).
    assert result["autovacuum_warning"] is False
    assert result["log_problems"] == []
