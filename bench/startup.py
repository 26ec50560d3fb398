"""Start-up: from `asynctask workers` to every default worker (7) holding a database connection.

Also the CPU all of asynctask's processes spent until then (the supervisor, its helpers, the
workers), a worker's memory just after (resident, and unique: not shared with another process),
and how long a SIGKILLed worker takes to be replaced by one holding a connection again.
A worker connects as soon as it has started (it needs the connection to look for work), so "holds
a connection" is "ready to claim".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil
import psycopg2

from bench.common import asynctask, base_parser, env, median, report, scratch_database

WORKERS = 7  # the default config.yaml: high 4, normal 2, low 1
POLL = 0.002


def _connected(cur: psycopg2.extensions.cursor, since: float = 0.0) -> dict[str, int]:
    """Worker slot -> backend pid, for worker connections opened after `since` (epoch seconds)."""
    cur.execute(
        "SELECT application_name, pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'asynctask worker %%'"
        " AND backend_start >= to_timestamp(%s)",
        (since,),
    )
    return {name.rsplit(" ", 1)[1]: pid for name, pid in cur.fetchall()}


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants, and the children it already reaped."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def _memory(workers: list[psutil.Process]) -> tuple[float, float]:
    """Median resident and unique (not shared with any other process) memory of a worker, MiB."""
    rss, uss = [], []
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            info = worker.memory_full_info()
            rss.append(info.rss / 2**20)
            uss.append(info.uss / 2**20)
    return round(median(rss), 1), round(median(uss), 1)


def _wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("start-up did not finish in time")
        time.sleep(POLL)


def one_run(url: str) -> dict[str, float]:
    """Start the workers, time them, replace one, stop them."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    began = time.monotonic()
    process = subprocess.Popen([*asynctask(), "workers"], env=env(url))
    try:
        _wait_for(lambda: len(_connected(cur)) == WORKERS)
        ready_s = time.monotonic() - began
        cpu_s = _tree_cpu(process.pid)
        workers = [
            p
            for p in psutil.Process(process.pid).children(recursive=True)
            if "asynctask worker" in " ".join(p.cmdline())
        ]
        rss_mib, uss_mib = _memory(workers)
        victim = next(p for p in workers if "worker high_2" in " ".join(p.cmdline()))
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        began = time.monotonic()
        _wait_for(lambda: "high_2" in _connected(cur, since=killed_at))
        replace_s = time.monotonic() - began
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        conn.close()
    return {
        "ready_s": ready_s,
        "cpu_s": cpu_s,
        "replace_s": replace_s,
        "worker_rss_mib": rss_mib,
        "worker_uss_mib": uss_mib,
    }


def main() -> None:
    """Several runs on one scratch database; medians and each run."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with scratch_database() as url:
        runs = [one_run(url) for _ in range(args.runs)]
    result: dict[str, object] = {
        key: round(median([run[key] for run in runs]), 3)
        for key in ("ready_s", "cpu_s", "replace_s", "worker_rss_mib", "worker_uss_mib")
    }
    result["runs"] = runs
    report("startup", result, args.json)


if __name__ == "__main__":
    main()
