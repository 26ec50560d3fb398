"""Soak: steady creates over HTTP for 30 minutes against a cluster with autovacuum and retention on.

Starts its own PostgreSQL cluster with production settings (bench/pgcluster.py), runs `asynctask
run` (API + the default pool high 4 / normal 2 / low 1) with handlers that take 1-3 ms, measures the
drain rate of that setup (its capacity), then creates tasks at half of it for --minutes while
sampling every --sample-seconds. Prints the verdict (bench/soak_verdict.py), writes --json and
draws the charts (bench/soak_charts.py). See bench/README.md, "Soak".
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from bench.common import ROOT, asynctask, base_parser, env, free_port, report, wait_http
from bench.pgcluster import Cluster, own_cluster
from bench.soak_load import (
    BUCKETS,
    MAX_IN_FLIGHT,
    Counters,
    histogram_percentile,
    start_load,
)
from bench.soak_sample import Sample, Sampler
from bench.soak_verdict import Account, Check, as_json, passed, verdict

POOL = {"high": 4, "normal": 2, "low": 1}
AUTOVACUUM_WARNING = "autovacuum = off"
_MIX_SQL = (
    "INSERT INTO tasks (type, priority) SELECT 'work',"
    " CASE WHEN i %% 7 < 4 THEN 1 WHEN i %% 7 < 6 THEN 2 ELSE 3 END FROM generate_series(1, %s) i;"
    " NOTIFY tasks_high; NOTIFY tasks_normal; NOTIFY tasks_low"
)
_UNFINISHED_SQL = "SELECT count(*) FROM tasks WHERE state IN ('available', 'retrying', 'running')"


@dataclass
class Options:
    """What one soak does; the defaults are the full run."""

    minutes: float = 30.0
    sample_seconds: float = 10.0
    rate: float | None = None  # creates/s; None: half the measured capacity
    capacity_tasks: int = 30_000
    capacity_runs: int = 3
    retention_minutes: float = 3.0
    warmup_minutes: float = 5.0
    span_minutes: float = 5.0
    quiet: bool = False


@dataclass
class Result:
    """A soak's measurements, account and verdict."""

    options: Options
    capacity_runs: list[float]
    rate: float
    samples: list[Sample]
    account: Account
    checks: list[Check]
    log: str  # asynctask's stderr
    drain_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def achieved_rate(self) -> float:
        """Creates answered 201 per second of the soak."""
        return self.account.created / (self.options.minutes * 60)

    @property
    def capacity(self) -> float:
        """The median of the capacity runs, tasks/s."""
        return float(statistics.median(self.capacity_runs))

    def as_json(self) -> dict[str, Any]:
        """The --json document (the charts are drawn from it)."""
        return {
            "minutes": self.options.minutes,
            "capacity": round(self.capacity),
            "capacity_runs": [round(r) for r in self.capacity_runs],
            "rate": round(self.rate, 1),
            "achieved_rate": round(self.achieved_rate, 1),
            "retention_minutes": self.options.retention_minutes,
            "account": self.account.__dict__,
            "drain_s": round(self.drain_s, 2),
            "verdict": as_json(self.checks),
            "samples": [s.as_json() for s in self.samples],
            **self.extra,
        }


def write_config(directory: Path, url: str, port: int, retention_minutes: float) -> Path:
    """The soak's config.yaml: the default pool, the 1-3 ms handler, retention in minutes."""
    raw = {
        "database": {"url": url},
        "api": {"port": port},
        "priority_queues": POOL,
        "handlers": {"work": "bench.handlers:work"},
        # failed tasks are kept (0) so that a failure shows in the account instead of vanishing.
        "retention": {"completed_days": retention_minutes / 1440, "failed_days": 0},
        "log_level": "WARNING",
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@contextlib.contextmanager
def running(
    cluster: Cluster, options: Options
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`asynctask run` on the cluster's database `soak`; yields (process, API port, log path)."""
    with tempfile.TemporaryDirectory(prefix="asynctask-soak-") as scratch:
        port = free_port()
        config = write_config(Path(scratch), cluster.url("soak"), port, options.retention_minutes)
        log_path = Path(scratch) / "asynctask.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*asynctask(), "--config", str(config), "run"],
                env=env(cluster.url("soak"), ASYNCTASK_CONFIG=str(config)),
                stderr=log,
                cwd=ROOT,
            )
        try:
            wait_http(f"http://127.0.0.1:{port}/ready", timeout=60)
            yield process, port, log_path
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def measure_capacity(url: str, tasks: int, runs: int) -> list[float]:
    """Drain rates (tasks/s) of `runs` backlogs of `tasks` in the soak's priority mix."""
    conn = psycopg2.connect(url)
    rates = []
    try:
        for _ in range(runs):
            with conn.cursor() as cur:
                cur.execute(_MIX_SQL, (tasks,))
                conn.commit()  # the NOTIFYs go out with the commit: the workers wake now
                started = time.monotonic()
                while True:
                    cur.execute(_UNFINISHED_SQL)
                    left = cur.fetchall()[0][0]
                    conn.commit()
                    if left == 0:
                        break
                    time.sleep(0.02)
                rates.append(tasks / (time.monotonic() - started))
            time.sleep(1)
    finally:
        conn.close()
    return rates


# A dedicated queue server's settings beside bench/pgcluster.py's production ones: shared buffers
# for the machine's memory, and every autovacuum run in the server log.
SOAK_SETTINGS = {"shared_buffers": "256MB", "log_autovacuum_min_duration": "0"}


def run_soak(cluster: Cluster, options: Options) -> Result:
    """Start asynctask on the cluster, measure capacity, soak, drain, and judge."""
    url = cluster.url("soak")
    with running(cluster, options) as (process, port, log_path):
        _say(options, f"measuring capacity: {options.capacity_runs} drains of"
             f" {options.capacity_tasks} tasks")  # fmt: skip
        capacity_runs = measure_capacity(url, options.capacity_tasks, options.capacity_runs)
        rate = options.rate or statistics.median(capacity_runs) / 2
        _say(options, f"capacity {statistics.median(capacity_runs):.0f} tasks/s"
             f" (runs {', '.join(f'{r:.0f}' for r in capacity_runs)}); soaking at {rate:.0f}"
             f" creates/s for {options.minutes:g} min")  # fmt: skip
        _execute(url, "TRUNCATE tasks")  # the soak starts from an empty table
        sampler = Sampler(url, process.pid, {"postgres (all)": [cluster.postmaster_pid()]})
        try:
            sampler.begin()
            base = f"http://127.0.0.1:{port}"
            load, counters, stop = start_load(base, rate, options.minutes * 60)
            sampler.groups["load generator"] = [load.pid or 0]
            try:
                samples = _sample_loop(sampler, counters, options)
            finally:
                _stop_load(load, stop)
            drain_s = _drain(url)  # nothing is created any more: the account below is final
            created, errors, missed = counters.read()
        finally:
            sampler.close()
        account = _account(url, created, errors, missed)
        log = log_path.read_text()
    checks = verdict(samples, account, options.warmup_minutes * 60, options.span_minutes * 60)
    extra = {
        "autovacuum_warning": AUTOVACUUM_WARNING in log,
        "log_problems": [
            line for line in log.splitlines() if " WARNING " in line or " ERROR " in line
        ],
    }
    return Result(options, capacity_runs, rate, samples, account, checks, log, drain_s, extra)


def _stop_load(load: Any, stop: Any) -> None:
    stop.set()
    load.join(30)  # requests in flight are answered within their 30 s timeout
    if load.is_alive():
        load.terminate()
        load.join()


def _say(options: Options, line: str) -> None:
    if not options.quiet:
        print(line, flush=True)


def _execute(url: str, statement: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def _sample_loop(sampler: Sampler, counters: Counters, options: Options) -> list[Sample]:
    samples: list[Sample] = []
    seen, seen_histogram = (0, 0, 0), [0] * BUCKETS
    count = max(1, round(options.minutes * 60 / options.sample_seconds))
    for n in range(1, count + 1):
        time.sleep(max(0.0, sampler.started + n * options.sample_seconds - time.monotonic()))
        now, histogram = counters.read(), counters.histogram()
        sample = sampler.take(now[0] - seen[0], now[1] - seen[1])
        sample.missed = now[2] - seen[2]
        window = [b - a for a, b in zip(seen_histogram, histogram, strict=True)]
        sample.post_p50_ms = histogram_percentile(window, 0.50)
        sample.post_p99_ms = histogram_percentile(window, 0.99)
        seen, seen_histogram = now, histogram
        samples.append(sample)
        _say(options, _progress(sample, options.sample_seconds))
    return samples


def _progress(s: Sample, seconds: float) -> str:
    p50 = f"{s.p50_ms:.1f}" if s.p50_ms is not None else "-"
    p99 = f"{s.p99_ms:.1f}" if s.p99_ms is not None else "-"
    post = f"{s.post_p99_ms:.1f}" if s.post_p99_ms is not None else "-"
    return (
        f"{s.t:7.0f} s  creates {s.creates / seconds:6.0f}/s  done {s.finished / seconds:6.0f}/s"
        f"  p50 {p50:>6} ms  p99 {p99:>6} ms  POST p99 {post:>6} ms  due {s.due:5d}"
        f"  rows {s.rows:8d}"
        f"  size {s.total_bytes / 2**20:7.1f} MiB  dead {s.dead_tuples:7d}"
        f"  vacuums {s.autovacuums:3d}  machine CPU {s.machine_cpu_percent:3.0f} %"
    )


def _drain(url: str, timeout: float = 120) -> float:
    """Seconds until no task is due or running once the load stopped."""
    started = time.monotonic()
    while _execute(url, _UNFINISHED_SQL)[0][0] and time.monotonic() - started < timeout:
        time.sleep(0.1)
    return time.monotonic() - started


def _account(url: str, created: int, errors: int, missed: int) -> Account:
    rows, not_completed = _execute(
        url, "SELECT count(*), count(*) FILTER (WHERE state <> 'completed') FROM tasks"
    )[0]
    # Only the pruner deletes, and only finished tasks: a created task that is gone had finished.
    return Account(created, errors, int(not_completed), created - int(rows), missed)


def render(result: Result) -> str:
    """The verdict as printed: capacity, rate, one line per check, the result."""
    runs = ", ".join(f"{r:,.0f}" for r in result.capacity_runs)
    lines = [
        f"capacity   {result.capacity:,.0f} tasks/s (median of drains of"
        f" {result.options.capacity_tasks:,} tasks: {runs})",
        f"rate       {result.rate:,.0f} creates/s asked for {result.options.minutes:g} min,"
        f" {result.achieved_rate:,.0f}/s achieved ({result.account.missed:,} creates missed:"
        f" {MAX_IN_FLIGHT} were already waiting; retention {result.options.retention_minutes:g}"
        f" min; drained {result.drain_s:.1f} s after the load stopped)",
    ]
    lines += [f"{c.name:<10} {'PASS' if c.passed else 'FAIL'}  {c.detail}" for c in result.checks]
    lines.append(f"verdict    {'PASS' if passed(result.checks) else 'FAIL'}")
    return "\n".join(lines)


def main() -> None:
    """Run the soak, print the verdict, write --json and the charts; exit 1 if it failed."""
    parser = base_parser(__doc__ or "")
    defaults = Options()
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--sample-seconds", type=float, default=defaults.sample_seconds)
    parser.add_argument("--rate", type=float, help="creates/s (default: half the capacity)")
    parser.add_argument("--capacity-tasks", type=int, default=defaults.capacity_tasks)
    parser.add_argument("--capacity-runs", type=int, default=defaults.capacity_runs)
    parser.add_argument("--retention-minutes", type=float, default=defaults.retention_minutes)
    parser.add_argument("--warmup-minutes", type=float, default=defaults.warmup_minutes)
    parser.add_argument("--span-minutes", type=float, default=defaults.span_minutes)
    parser.add_argument("--charts", type=Path, default=ROOT / "bench" / "soak")
    parser.add_argument("--no-charts", action="store_true", help="draw no charts (no matplotlib)")
    args = parser.parse_args()
    skip = ("json", "charts", "no_charts")
    options = Options(**{k: v for k, v in vars(args).items() if k not in skip})
    with own_cluster(SOAK_SETTINGS) as cluster:
        result = run_soak(cluster, options)
    print(render(result), flush=True)
    document = result.as_json()
    report("soak", document, args.json)
    if not args.no_charts:
        from bench.soak_charts import draw  # matplotlib: only when charts are drawn

        for path in draw(document, args.charts):
            print(f"chart {path}")
    raise SystemExit(0 if passed(result.checks) else 1)


if __name__ == "__main__":
    main()
