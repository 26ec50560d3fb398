"""Every dashboard route on a 10,000,000-task table: the time each answer takes.

Builds its own scratch database (minutes: rows go in 1,000,000 per statement, through the count
triggers and every index, then VACUUM ANALYZE), spread over three days of history: mostly
completed, a backlog of new available tasks and a starving old one, failed, cancelled, retrying
and running tasks, common and rare types. It checks the kept counts against count(*) once, adds a
registry of 3 supervisors, starts `asynctask api` and times each route (--repeat requests each,
one after another on one keep-alive connection; /api/stats and /api/events wait out the 1 s cache
so that each one is a fresh refresh), then one bulk retry that changes rows (every failed task of
the rare type). Prints one line per route: median, p95 and max ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

import aiohttp
import psycopg2

from asynctask.core.counts import COMPACT_LOCK
from asynctask.core.sql import QUERIES, inline_params
from bench.common import base_parser, free_port, report, scratch_database, start, wait_http

CHUNK = 1_000_000
FILL = """
INSERT INTO tasks (type, priority, state, attempts, data, scheduled_at, inserted_at, updated_at,
    started_at, finished_at, last_error, locked_by, lease_expires_at)
SELECT
    CASE WHEN (i / 7) %% 100000 = 0 THEN 'very_rare' WHEN (i / 7) %% 100 = 0 THEN 'rare'
         WHEN (i / 7) %% 10 = 1 THEN 'finances' ELSE 'report' END,
    CASE WHEN (i / 3) %% 50 = 0 OR (i <= 1000000 AND i %% 1000 = 7) THEN 3
         WHEN (i / 3) %% 5 = 1 THEN 2 ELSE 1 END,
    s.state,
    CASE WHEN s.state = 'available' THEN 0 WHEN s.state = 'failed' THEN 5 ELSE 1 END,
    '{"month": "2024-05", "customer": 42}', t.at, t.at, t.at,
    CASE WHEN s.state NOT IN ('available', 'cancelled') THEN t.at END,
    CASE WHEN s.state IN ('completed', 'failed', 'cancelled') THEN t.at + interval '50 ms' END,
    CASE WHEN s.state IN ('failed', 'retrying') THEN 'ValueError: boom' END,
    CASE WHEN s.state = 'running' THEN 'bench:1:high_1' END,
    CASE WHEN s.state = 'running' THEN now() + interval '1 hour' END
FROM generate_series(%(start)s, %(end)s) AS i,
LATERAL (SELECT now() - (%(rows)s - i) * interval '25 milliseconds' AS at) AS t,
LATERAL (SELECT CASE
    WHEN i > %(rows)s - 30 THEN 'running'
    WHEN i > %(rows)s - 200000 AND i %% 2 = 0 THEN 'available'
    WHEN i <= 1000000 AND i %% 1000 = 7 THEN 'available'
    WHEN i %% 200 = 3 THEN 'failed'
    WHEN i %% 400 = 5 THEN 'cancelled'
    WHEN i %% 2000 = 9 THEN 'retrying'
    ELSE 'completed' END AS state) AS s
"""
REGISTRY = """
INSERT INTO workers (host, supervisor_pid, slot, priority, pid, locked_by, status, task_id,
    heartbeat_at)
SELECT 'host-' || h, 100 + h, s.slot, s.priority, 1000 * h + s.n, 'host-' || h || ':1:' || s.slot,
    CASE WHEN s.n % 2 = 0 THEN 'busy' ELSE 'idle' END, CASE WHEN s.n % 2 = 0 THEN s.n END,
    now() - CASE WHEN h = 3 THEN interval '1 minute' ELSE interval '0' END
FROM generate_series(1, 3) AS h, (VALUES ('high_1', 1, 1), ('high_2', 1, 2), ('high_3', 1, 3),
    ('high_4', 1, 4), ('normal_1', 2, 5), ('normal_2', 2, 6), ('low_1', 3, 7))
    AS s(slot, priority, n)
"""


def fill(url: str, rows: int) -> dict[str, float]:
    """Insert `rows` tasks and vacuum; seconds for each step; raises if the counts disagree."""
    took: dict[str, float] = {}
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        started = time.monotonic()
        for first in range(1, rows + 1, CHUNK):
            last = min(rows, first + CHUNK - 1)
            cur.execute(FILL, {"start": first, "end": last, "rows": rows})
            print(f"dashboard_big: {last:,} rows in {time.monotonic() - started:.0f} s", flush=True)
        took["insert_s"] = time.monotonic() - started
        started = time.monotonic()
        cur.execute("VACUUM ANALYZE tasks")
        took["vacuum_analyze_s"] = time.monotonic() - started
        # Steady state: a worker folds the count deltas every 2 s; the fill made them all at once.
        started = time.monotonic()
        cur.execute(QUERIES["compact_counts"].inline, inline_params((COMPACT_LOCK,)))
        took["first_compaction_s"] = time.monotonic() - started
        cur.execute(REGISTRY)
        started = time.monotonic()
        cur.execute(
            "SELECT (SELECT count(*) FROM tasks) = (SELECT sum(tasks) FROM ("
            " SELECT tasks FROM task_counts UNION ALL SELECT delta FROM task_count_deltas) AS c)"
        )
        if not cur.fetchone()[0]:
            raise SystemExit("dashboard_big: the kept counts disagree with count(*)")
        took["one_count_star_s"] = time.monotonic() - started
        cur.execute("SELECT pg_size_pretty(pg_total_relation_size('tasks'))")
        print(f"dashboard_big: tasks is {cur.fetchone()[0]} with its indexes", flush=True)
    conn.close()
    return {key: round(value, 1) for key, value in took.items()}


def routes(rows: int) -> list[tuple[str, str, str, Any]]:
    """(label, method, path, json body) of every request to time."""
    deep = rows // 2
    found: list[tuple[str, str, str, Any]] = [
        ("stats", "GET", "/api/stats", None),
        ("events (one event)", "GET", "/api/events", None),
        ("queues", "GET", "/api/queues", None),
        ("workers", "GET", "/api/workers", None),
        ("session", "GET", "/api/session", None),
        ("task", "GET", f"/api/tasks/{deep}", None),
        ("tasks", "GET", "/api/tasks", None),
        ("tasks deep page", "GET", f"/api/tasks?cursor={_base36(deep)}", None),
    ]
    filters = [
        "state=available", "state=running", "state=retrying", "state=completed", "state=failed",
        "state=cancelled", "priority=low", "priority=normal", "type=rare", "type=very_rare",
        "type=nope", "state=failed&type=rare", "state=available&priority=low",
        "state=completed&priority=normal&type=finances", "state=cancelled&type=very_rare",
    ]  # fmt: skip
    found += [(f"tasks?{f}", "GET", f"/api/tasks?{f}", None) for f in filters]
    found += [
        (f"tasks?{f} deep page", "GET", f"/api/tasks?{f}&cursor={_base36(deep)}", None)
        for f in ("state=failed", "type=rare", "priority=low")
    ]
    found += [
        ("bulk retry preview", "POST", "/api/tasks/bulk/retry", {"dry_run": True}),
        (
            "bulk cancel preview",
            "POST",
            "/api/tasks/bulk/cancel",
            {"dry_run": True, "type": "rare"},
        ),
        ("pause", "POST", "/api/queues/low/pause", None),
        ("resume", "POST", "/api/queues/low/resume", None),
    ]
    return found


def _base36(n: int) -> str:
    digits = ""
    while n:
        n, d = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
    return digits or "0"


async def time_routes(base: str, rows: int, repeat: int) -> list[dict[str, Any]]:
    """Each route `repeat` times; its median, p95 and max in ms, and its status."""
    results = []
    async with aiohttp.ClientSession(base) as session:
        for label, method, path, body in routes(rows):
            ms, status = [], 0
            for _ in range(repeat):
                if label.startswith(("stats", "events")):
                    await asyncio.sleep(1.1)  # past the cache: a fresh refresh each time
                started = time.perf_counter()
                async with session.request(method, path, json=body) as response:
                    await response.read()
                    status = response.status
                ms.append((time.perf_counter() - started) * 1000)
            ms.sort()
            results.append({
                "route": f"{method} {label}", "status": status,
                "p50_ms": round(statistics.median(ms), 1),
                "p95_ms": round(ms[max(0, round(0.95 * len(ms)) - 1)], 1),
                "max_ms": round(ms[-1], 1),
            })  # fmt: skip
        # A bulk action that changes rows: retry every failed task of the rare type.
        started = time.perf_counter()
        body = {"dry_run": False, "state": "failed", "type": "rare"}
        async with session.post("/api/tasks/bulk/retry", json=body) as response:
            changed = (await response.json())["count"]
        ms = round((time.perf_counter() - started) * 1000, 1)
        results.append({"route": f"POST bulk retry of {changed} tasks", "status": 200,
                        "p50_ms": ms, "p95_ms": ms, "max_ms": ms})  # fmt: skip
    return results


def main() -> None:
    """Build the table, time every route, print one line per route."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with scratch_database() as url:
        built = fill(url, args.rows)
        port = free_port()
        service = start(["api", "--port", str(port)], url)
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            timed = asyncio.run(time_routes(f"http://127.0.0.1:{port}", args.rows, args.repeat))
        finally:
            with contextlib.suppress(Exception):
                service.stop()
    for result in timed:
        report("dashboard_big", result, None)
    slowest = max(timed, key=lambda r: r["max_ms"])
    summary = {"rows": args.rows, **built, "slowest_route": slowest["route"],
               "slowest_max_ms": slowest["max_ms"], "routes": timed}  # fmt: skip
    report("dashboard_big", summary, args.json)


if __name__ == "__main__":
    main()
