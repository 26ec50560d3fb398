"""The drain's CPU: worker processes and their own database backends, not wall time.

Like `bench.load_test` (the original's plain-SQL INSERT, `asynctask workers` with config.yaml), but
it reports the CPU seconds the supervisor and its workers used, and those of the database
backends serving the workers' connections (found in pg_stat_activity by application_name), from
the INSERT's commit until nothing is due or running. On a machine shared with other work, wall
time moves by tens of percent between identical runs while these CPU seconds move by a few, so
compare variants with this. `--root` runs the workers (and applies the schema) of another
checkout, to compare against an older version; `--sql` runs statements after the schema (say,
`ALTER TABLE tasks DISABLE TRIGGER USER` to see what the count triggers cost).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg2
import psycopg2.extensions

from bench.common import ADMIN_DSN, ROOT, UNFINISHED_SQL, admin, base_parser, report


def cpu(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of these processes."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def main() -> None:
    """One drain; prints wall time, worker CPU and backend CPU."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose workers run")
    parser.add_argument("--sql", default="", help="statements to run after the schema")
    args = parser.parse_args()
    name = f"asynctask_drain_{os.getpid()}"
    with contextlib.closing(admin()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        result = drain(psycopg2.extensions.make_dsn(ADMIN_DSN, dbname=name), args)
    finally:
        with contextlib.closing(admin()) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    report("drain_cpu", result, args.json)


def drain(url: str, args: argparse.Namespace) -> dict[str, object]:
    """Start the workers of `args.root`, insert, wait for the drain, measure."""
    root: Path = args.root
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute((root / "schema.sql").read_text())
    if args.sql:
        cur.execute(args.sql)
    env = dict(os.environ, DATABASE_URL=url, ASYNCTASK_CONFIG=str(root / "config.yaml"),
               ASYNCTASK_LOG_LEVEL="WARNING", PYTHONPATH=str(root))  # fmt: skip
    # From `root`: the command line puts its working directory first on sys.path.
    command = [sys.executable, "-m", "asynctask.cli", "workers"]
    workers = subprocess.Popen(command, env=env, cwd=root)
    try:
        time.sleep(5)  # every worker started and connected
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'asynctask worker %%'"
        )
        backends = [psutil.Process(row[0]) for row in cur.fetchall()]
        supervisor = psutil.Process(workers.pid)
        processes = [supervisor, *supervisor.children(recursive=True)]
        worker_cpu, backend_cpu = cpu(processes), cpu(backends)
        cur.execute(
            "INSERT INTO tasks (priority, type, data, inserted_at, updated_at)"
            " SELECT 1, 'report', '{}', now(), now() FROM generate_series(1, %s)",
            (args.rows,),
        )
        started = time.monotonic()
        while True:
            cur.execute(UNFINISHED_SQL)
            if not cur.fetchone()[0]:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        worker_cpu, backend_cpu = cpu(processes) - worker_cpu, cpu(backends) - backend_cpu
    finally:
        workers.terminate()
        workers.wait(60)
        conn.close()
    return {
        "rows": args.rows,
        "root": str(root),
        "elapsed_s": round(elapsed, 2),
        "worker_cpu_s": round(worker_cpu, 2),
        "backend_cpu_s": round(backend_cpu, 2),
        "total_cpu_s": round(worker_cpu + backend_cpu, 2),
        "backends": len(backends),
    }


if __name__ == "__main__":
    main()
