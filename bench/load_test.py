"""The original's load test: insert N rows with plain SQL, let the workers drain them.

Runs `asynctask workers` with the repository's config.yaml (high: 4; `report` is a no-op demo
handler) against a scratch database, then inserts the rows with the original's statement and
times the drain from the INSERT's commit to the last task completed. `--handler plain` or
`--handler async` runs `report` as a no-op plain function (`def`) or coroutine (`async def`) of
bench/handlers.py instead, to compare the two kinds of handler.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psycopg2
import yaml

from bench.common import (
    ROOT,
    UNFINISHED_SQL,
    base_parser,
    commits,
    cpu_seconds,
    drain_result,
    postgres_cpu_seconds,
    report,
    scratch_database,
    start,
)

LOAD_SQL = (
    "INSERT INTO tasks (priority, type, data, inserted_at, updated_at)"
    " SELECT 1, 'report', '{}', now(), now() FROM generate_series(1, %s)"
)
HANDLERS = {"plain": "bench.handlers:plain_noop", "async": "bench.handlers:noop"}


def config_with(handler: str | None, folder: Path) -> dict[str, str]:
    """Environment overrides that make `report` the chosen no-op (none: config.yaml's demo)."""
    if handler is None:
        return {}
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["handlers"]["report"] = HANDLERS[handler]
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return {"ASYNCTASK_CONFIG": str(path)}


def main() -> None:
    """Run one drain and print its summary line."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many s")
    parser.add_argument("--handler", choices=sorted(HANDLERS), help="a no-op of this kind")
    args = parser.parse_args()
    with scratch_database() as url, tempfile.TemporaryDirectory() as folder:
        workers = start(["workers"], url, **config_with(args.handler, Path(folder)))
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            time.sleep(3)  # let every worker process start and go idle
            committed = commits(url)
            result = drain(conn, workers, args.rows, args.timeout)
        finally:
            conn.close()
            result_code = workers.stop()
        # After the stop: each worker's backend has reported its commits on the way out. The
        # drain's own polls count too (5 a second), a few hundred at most.
        per_task = (commits(url) - committed) / max(result["completed"], 1)
        result["commits_per_100_tasks"] = round(100 * per_task, 1)
        result["workers_exit_code"] = result_code
        result["handler"] = args.handler or "config.yaml"
    report("load_test", result, args.json)


def drain(conn: psycopg2.extensions.connection, workers, rows: int, timeout: float) -> dict:
    """Insert `rows` tasks, wait until none is due or running, and measure."""
    worker_procs = workers.tree()
    cpu_workers, cpu_pg = cpu_seconds(worker_procs), postgres_cpu_seconds()
    with conn.cursor() as cur:
        cur.execute(LOAD_SQL, (rows,))
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            cur.execute(UNFINISHED_SQL)
            if not cur.fetchone()[0]:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        cpu_workers = cpu_seconds(worker_procs) - cpu_workers
        cpu_pg = postgres_cpu_seconds() - cpu_pg
        return drain_result(cur, rows, elapsed, cpu_workers_s=cpu_workers, cpu_postgres_s=cpu_pg)


if __name__ == "__main__":
    main()
