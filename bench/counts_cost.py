"""What the dashboard and retention cost the drain's hot statements: the count triggers,
tasks_list_idx and tasks_finished_idx.

One client drains N tasks with exactly a worker's statements (the prepared claim of 100, then one
`finish` of those 100), on a scratch database, in five variants run in interleaved rounds: as
shipped, without the count triggers, without tasks_list_idx, without both, and without the
retention's tasks_finished_idx (the others keep it, as shipped). It reports the
median CPU seconds the server's backend spent on the drain (from /proc, so a busy machine
inflates it far less than wall time), and the median wall time. A full `bench.load_test` adds
worker processes and their noise; this isolates the statements. Run it on the database's host.
Last, EXPLAIN ANALYZE of a lone insert, a claim of 100 and a finish of 100 (as shipped) gives the
count trigger's own time per statement, which PostgreSQL measures exactly.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid

import psutil
import psycopg2
import psycopg2.extensions

from asynctask.core import arrays
from asynctask.core.sql import QUERIES, inline_params
from bench.common import base_parser, report, scratch_database

TRIGGERS = ("tasks_count_inserts", "tasks_count_updates", "tasks_count_deletes")
LIST_INDEX = (
    "CREATE INDEX tasks_list_idx ON tasks (state, priority, type, id) WHERE state <> 'running'"
)
FINISHED_INDEX = (
    "CREATE INDEX tasks_finished_idx ON tasks (state, finished_at)"
    " WHERE state IN ('completed', 'failed', 'cancelled')"
)
VARIANTS = ("shipped", "no_triggers", "no_list_index", "neither", "no_finished_index")


def main() -> None:
    """Run the rounds and print one summary line per variant."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with scratch_database() as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = psutil.Process(cur.fetchone()[0])
            cur.execute(QUERIES["claim"].prepare)
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    setup(cur, variant)
                    before = sum(backend.cpu_times()[:2])
                    wall[variant].append(drain(cur, args.rows))
                    cpu[variant].append(sum(backend.cpu_times()[:2]) - before)
            setup(cur, "shipped")
            trigger_ms = trigger_times(cur, args.rows)
        conn.close()
    result: dict[str, object] = {"rows": args.rows, "rounds": args.rounds, **trigger_ms}
    shipped = statistics.median(cpu["shipped"])
    for variant in VARIANTS:
        median = statistics.median(cpu[variant])
        result[f"{variant}_cpu_s"] = round(median, 3)
        result[f"{variant}_wall_s"] = round(statistics.median(wall[variant]), 3)
        result[f"{variant}_cpu_runs"] = [round(r, 3) for r in cpu[variant]]
        if variant != "shipped":
            result[f"shipped_vs_{variant}_pct"] = round(100 * (shipped - median) / median, 1)
    report("counts_cost", result, args.json)


def setup(cur: psycopg2.extensions.cursor, variant: str) -> None:
    """An empty table with the variant's triggers and index, then the rows to drain."""
    cur.execute("TRUNCATE tasks")
    action = "DISABLE" if variant in ("no_triggers", "neither") else "ENABLE"
    for trigger in TRIGGERS:
        cur.execute(f"ALTER TABLE tasks {action} TRIGGER {trigger}")
    cur.execute("DROP INDEX IF EXISTS tasks_list_idx")
    if variant in ("shipped", "no_triggers", "no_finished_index"):
        cur.execute(LIST_INDEX)
    cur.execute("DROP INDEX IF EXISTS tasks_finished_idx")
    if variant != "no_finished_index":
        cur.execute(FINISHED_INDEX)
    cur.execute("DELETE FROM task_count_deltas; DELETE FROM task_counts")
    cur.execute(
        "INSERT INTO tasks (priority, type, data, inserted_at, updated_at)"
        " SELECT 1, 'report', '{}', now(), now() FROM generate_series(1, %s)",
        (0,),
    )
    cur.execute("VACUUM ANALYZE tasks")


def drain(cur: psycopg2.extensions.cursor, rows: int) -> float:
    """Insert `rows` tasks, then claim and finish them 100 at a time; seconds for the drain."""
    cur.execute(
        "INSERT INTO tasks (priority, type, data, inserted_at, updated_at)"
        " SELECT 1, 'report', '{}', now(), now() FROM generate_series(1, %s)",
        (rows,),
    )
    finish = QUERIES["finish"].inline
    started = time.perf_counter()
    while True:
        token = str(uuid.uuid4())
        cur.execute(QUERIES["claim"].execute, (1, 100, "bench:1:high_1", token, 30.0, 1 << 22))
        ids = [row[0] for row in cur.fetchall()]
        if not ids:
            return time.perf_counter() - started
        cur.execute(finish, inline_params(finish_params(ids, token)))


def finish_params(ids: list[int], token: str) -> tuple[object, ...]:
    """`finish`'s parameters completing these tasks, encoded as claims.finish sends them."""
    n = len(ids)
    tokens, states = arrays.texts([token] * n), arrays.texts(["completed"] * n)
    # No delays, errors or results: NULL arrays, as claims.finish sends them.
    return arrays.numbers(ids), tokens, states, None, arrays.bools([False] * n), None, None


def trigger_times(cur: psycopg2.extensions.cursor, rows: int) -> dict[str, float]:
    """Median ms per statement: the count trigger's own time, and the whole statement's."""
    cur.execute(
        "INSERT INTO tasks (priority, type, data) SELECT 1, 'report', '{}'"
        " FROM generate_series(1, %s)",
        (rows,),
    )
    samples: dict[str, list[tuple[float, float]]] = {"insert_one": [], "claim": [], "finish": []}
    for _ in range(100):
        samples["insert_one"].append(explain(cur, "insert_one", ("report", 1, 5, "{}", None, None)))
        token = str(uuid.uuid4())
        samples["claim"].append(explain(cur, "claim", (1, 100, "b:1:high_1", token, 30.0, 1 << 22)))
        cur.execute("SELECT id FROM tasks WHERE lock_token = %s", (token,))
        ids = [row[0] for row in cur.fetchall()]
        samples["finish"].append(explain(cur, "finish", finish_params(ids, token)))
    result = {}
    for name, found in samples.items():
        result[f"{name}_trigger_ms"] = round(statistics.median(t for t, _ in found), 4)
        result[f"{name}_statement_ms"] = round(statistics.median(s for _, s in found), 4)
    return result


def explain(
    cur: psycopg2.extensions.cursor, name: str, params: tuple[object, ...]
) -> tuple[float, float]:
    """(trigger ms, execution ms) of one run of a catalogue statement."""
    cur.execute("EXPLAIN (ANALYZE) " + QUERIES[name].inline, inline_params(params))
    lines = [row[0] for row in cur.fetchall()]
    trigger = sum(
        float(ms)
        for line in lines
        for ms in re.findall(r"Trigger tasks_count_\w+: time=([\d.]+)", line)
    )
    total = re.search(r"Execution Time: ([\d.]+)", lines[-1])
    return trigger, float(total.group(1)) if total else 0.0


if __name__ == "__main__":
    main()
