"""The cost of `finish`'s NOTIFY tasks_finished, A/B, interleaved finely enough for a busy machine.

Four threads (a pool of four workers, each with its own connection) claim 100 due tasks and
finish them as completed, again and again, over a table of plain-SQL tasks. Phases of `--phase`
tasks alternate between `finish` without the NOTIFY (the statement as it was before
wait-for-result) and with it (queries.sql's), so load from elsewhere falls on both alike. Prints
each variant's median and total throughput over its phases.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid

import psycopg2

from asynctask.core.sql import QUERIES
from bench.common import base_parser, report, scratch_database

# `finish` before the NOTIFY was added (same UPDATE, no CTE, no pg_notify).
WITHOUT_NOTIFY = """
UPDATE tasks AS t SET state = o.state,
    attempts = t.attempts - o.uncharge::int,
    scheduled_at = CASE WHEN o.delay_ms IS NULL THEN t.scheduled_at
        ELSE now() + o.delay_ms * interval '1 millisecond' END,
    finished_at = CASE WHEN o.state IN ('completed', 'failed', 'cancelled') THEN now() END,
    started_at = CASE WHEN o.uncharge THEN NULL ELSE t.started_at END,
    last_error = coalesce(o.error, t.last_error),
    locked_by = NULL, lock_token = NULL, lease_expires_at = NULL, updated_at = now()
FROM unnest(%(1)s::bigint[], %(2)s::uuid[], %(3)s::text[], %(4)s::int[], %(5)s::bool[],
    %(6)s::text[]) AS o(id, token, state, delay_ms, uncharge, error)
WHERE t.id = o.id AND t.lock_token = o.token AND t.state = 'running'
"""
VARIANTS = {"without": WITHOUT_NOTIFY, "with": QUERIES["finish"].inline}
THREADS = 4
BATCH = 100


def drain_phase(url: str, statement: str, tasks: int) -> float:
    """Claim and finish `tasks` tasks with 4 threads; tasks per second."""
    left = [tasks]
    lock = threading.Lock()

    def work() -> None:
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                while True:
                    with lock:
                        take = min(BATCH, left[0])
                        left[0] -= take
                    if take == 0:
                        return
                    token = str(uuid.uuid4())
                    params = (1, take, "bench", token, 60.0, 2**40)
                    cur.execute(
                        QUERIES["claim"].inline, {str(i + 1): v for i, v in enumerate(params)}
                    )
                    ids = [row[0] for row in cur.fetchall()]
                    conn.commit()
                    n = len(ids)
                    values = (
                        ids,
                        [token] * n,
                        ["completed"] * n,
                        [None] * n,
                        [False] * n,
                        [None] * n,
                    )
                    cur.execute(statement, {str(i + 1): v for i, v in enumerate(values)})
                    conn.commit()
        finally:
            conn.close()

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tasks / (time.monotonic() - started)


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--phase", type=int, default=20_000, help="tasks per phase")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with scratch_database() as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO tasks (priority, type, data) SELECT 1, 'report', '{}'"
                " FROM generate_series(1, %s)",
                (args.phase * args.pairs * 2,),
            )
            cur.execute("VACUUM ANALYZE tasks")
        conn.close()
        for pair in range(args.pairs):
            order = list(VARIANTS) if pair % 2 == 0 else list(VARIANTS)[::-1]
            for name in order:
                rates[name].append(drain_phase(url, VARIANTS[name], args.phase))
    result: dict[str, object] = {}
    for name, values in rates.items():
        result[f"{name}_median_per_s"] = round(statistics.median(values))
        result[f"{name}_runs"] = [round(v) for v in values]
    report("finish_notify", result, args.json)
    for name, values in rates.items():
        print(f"  {name} NOTIFY: {', '.join(str(round(v)) for v in values)} tasks/s")


if __name__ == "__main__":
    main()
