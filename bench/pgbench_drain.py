"""The database's own ceiling for the drain: pgbench claiming and completing in asynctask's shape.

A scratch database gets asynctask's schema (every index and the count triggers) and the original's
`INSERT … generate_series(1, N)`, exactly as `bench.load_test` does; then `pgbench -M prepared`
with 2 clients runs, per transaction of its script: claim up to 100 due tasks in one statement
(asynctask's claim: the same due-index scan, SKIP LOCKED, the same columns set, committed without
waiting for the WAL flush) and commit; complete them in one statement (by the claim's token, with
a synchronous commit) and commit. No Python, no handler, no result returned to a program: the
rate PostgreSQL itself allows this machine. `bench.load_test` measured back to back with it gives
asynctask's share of that ceiling (issue 16: at least 0.6 times).

The drain starts on the table much as the INSERT left it, as asynctask's does (its workers are
already running when the rows commit): after an ANALYZE only, so both pay for setting the new
rows' hint bits on first touch. `--vacuum` runs VACUUM ANALYZE first, a friendlier start.

`--bare` drops asynctask's dashboard additions first (the count triggers and tasks_list_idx) to show
what they cost the ceiling.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2

from bench.common import (
    base_parser,
    commits,
    drain_result,
    postgres_cpu_seconds,
    report,
    scratch_database,
)
from bench.load_test import LOAD_SQL

CLIENTS = 2
BATCH = 100
# The token is made from a random number, so a client's complete finds exactly its own claim.
SCRIPT = f"""\\set token random(1, 2000000000)
WITH due AS (
    SELECT id, scheduled_at FROM tasks
    WHERE state IN ('available', 'retrying') AND priority = 1 AND scheduled_at <= now()
    ORDER BY scheduled_at, id LIMIT {BATCH} FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t SET state = 'running', attempts = t.attempts + 1, locked_by = 'pgbench high_1',
    lock_token = md5(CAST(:token AS text))::uuid, lease_expires_at = now() + interval '30 seconds',
    started_at = now(), updated_at = now()
FROM due, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
WHERE t.id = due.id;
UPDATE tasks SET state = 'completed', finished_at = now(), locked_by = NULL, lock_token = NULL,
    lease_expires_at = NULL, updated_at = now()
WHERE state = 'running' AND lock_token = md5(CAST(:token AS text))::uuid;
"""
BARE_SQL = (
    "DROP TRIGGER tasks_count_inserts ON tasks; DROP TRIGGER tasks_count_updates ON tasks;"
    " DROP TRIGGER tasks_count_deletes ON tasks; DROP TRIGGER tasks_count_truncates ON tasks;"
    " DROP INDEX tasks_list_idx"
)


def main() -> None:
    """Fill, drain with pgbench, print the summary line."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bare", action="store_true", help="without the triggers and list index")
    parser.add_argument(
        "--vacuum", action="store_true", help="VACUUM ANALYZE the loaded table before the drain"
    )
    args = parser.parse_args()
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit("pgbench is not installed (Debian: postgresql-client)")
    with scratch_database() as url, tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "drain.sql"
        script.write_text(SCRIPT)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            if args.bare:
                cur.execute(BARE_SQL)
            cur.execute(LOAD_SQL, (args.rows,))
            # Statistics at least: without them the planner takes the table for empty and the
            # script's complete-by-token UPDATE scans it whole (asynctask's finish, by id, is
            # not exposed to that). VACUUM as well only with --vacuum (see above).
            cur.execute("VACUUM ANALYZE tasks" if args.vacuum else "ANALYZE tasks")
        result = drain(pgbench, url, script, args.rows, conn)
        conn.close()
    result["bare"] = args.bare
    result["vacuum"] = args.vacuum
    report("pgbench_drain", result, args.json)


def drain(
    pgbench: str, url: str, script: Path, rows: int, conn: psycopg2.extensions.connection
) -> dict[str, object]:
    """Run pgbench until every task is claimed and completed; time it and its CPU."""
    # Each client runs enough transactions for its share, plus slack: past the end they claim
    # nothing and cost a few empty statements.
    per_client = rows // (BATCH * CLIENTS) + 10
    committed = commits(url)
    cpu_before = postgres_cpu_seconds()
    started = time.monotonic()
    command = [pgbench, "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", str(CLIENTS),
               "-t", str(per_client), "-f", str(script), url]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    elapsed = time.monotonic() - started
    cpu_pg = postgres_cpu_seconds() - cpu_before
    with conn.cursor() as cur:
        result = drain_result(cur, rows, elapsed, cpu_postgres_s=cpu_pg)
    per_task = (commits(url) - committed) / max(int(result["completed"]), 1)
    result["commits_per_100_tasks"] = round(100 * per_task, 1)
    return result


if __name__ == "__main__":
    main()
