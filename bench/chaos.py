"""Chaos: api + workers on a scratch database, faults on a schedule, an account of every task.

Enqueues N tasks (half through the API's batch route, half by plain SQL) whose handler records
each execution in its own table over its own autocommit connection, then injects SIGKILLs of
random workers, one SIGKILL of the supervisor followed by a restart, and one PostgreSQL restart.
Prints the account; exits 1 if a task was lost or left running. See bench/README.md.
"""

from __future__ import annotations

import functools
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from bench.chaos_account import (
    DB_RESTART,
    SUPERVISOR_KILL,
    WORKER_KILL,
    Account,
    Event,
    render,
    tally,
)
from bench.chaos_faults import Chaos, db_restart_command, listening
from bench.chaos_handlers import EXECUTIONS_DDL
from bench.common import base_parser, connect, report, scalar, scratch_database, wait_for, wait_http
from bench.feed import post_tasks

LEASE_SECONDS = 5.0
BATCH = 500
CONFIG = {
    "database": {"pool_size": 5},
    "priority_queues": {"high": 2, "normal": 1, "low": 1},
    "lease_seconds": LEASE_SECONDS,
    "timeout_milliseconds": 200,
    "shutdown_timeout_seconds": 10,
    "log_level": "WARNING",
    "handlers": {"record": "bench.chaos_handlers:record"},
}


def _priority(key: int) -> str:
    return ("high", "high", "normal", "low")[key % 4]


def _work_ms(key: int, most: int) -> int:
    # 1 to `most` ms of work, so that kills land on running tasks.
    return 1 + key % most


def _task(key: int, most: int) -> dict[str, Any]:
    data = {"k": key, "ms": _work_ms(key, most)}
    return {"type": "record", "priority": _priority(key), "data": data}


def _enqueue_api(port: int, keys: range, most: int) -> None:
    """POST the keys in batches; retry a batch until it is answered 201."""
    tasks = [_task(k, most) for k in keys]
    post_tasks([f"http://127.0.0.1:{port}"], tasks, batch=BATCH)


def _enqueue_sql(url: str, keys: range, most: int) -> None:
    """INSERT the keys by plain SQL (no NOTIFY: the workers' polling finds them)."""
    priorities = {"high": 1, "normal": 2, "low": 3}
    for first in range(keys.start, keys.stop, BATCH):
        batch = list(range(first, min(first + BATCH, keys.stop)))
        rows = [(k, priorities[_priority(k)], _work_ms(k, most)) for k in batch]
        while True:
            try:
                conn = connect(url)
                try:
                    with conn.cursor() as cur:
                        cur.execute(
                            "INSERT INTO tasks (type, priority, data) SELECT 'record', p,"
                            " jsonb_build_object('k', k, 'ms', ms)"
                            " FROM unnest(%s::int[], %s::smallint[], %s::int[]) AS r(k, p, ms)",
                            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
                        )
                finally:
                    conn.close()
                break
            except psycopg2.Error:
                time.sleep(0.2)


def run_chaos(
    url: str,
    n: int = 20_000,
    kills: int = 12,
    supervisor_kill: bool = True,
    db_restart: bool = True,
    interval: float = 1.0,
    timeout: float = 600.0,
    seed: int = 1,
    work_ms: int = 5,
) -> Account:
    """Run one chaos round against an empty migrated database `url`; returns its account."""
    command, note = db_restart_command(url) if db_restart else (None, "not requested")
    if db_restart and command is None:
        print(f"chaos: PostgreSQL restart {note}", file=sys.stderr, flush=True)
    scalar(url, EXECUTIONS_DDL + "; SELECT 1")
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "chaos.yaml"
        config_path.write_text(json.dumps(CONFIG))  # JSON is YAML
        chaos = Chaos(url, config_path, LEASE_SECONDS)
        try:
            wait_http(f"http://127.0.0.1:{chaos.port}/health")
            wait_for(lambda: listening(url) >= 4, 30)
            started = time.monotonic()
            feeders = [
                threading.Thread(target=_enqueue_api, args=(chaos.port, range(0, n // 2), work_ms)),
                threading.Thread(target=_enqueue_sql, args=(url, range(n // 2, n), work_ms)),
            ]
            for feeder in feeders:
                feeder.start()
            schedule = _schedule(kills, supervisor_kill, command is not None)
            rng = random.Random(seed)
            for step in schedule:
                time.sleep(interval)
                if not any(f.is_alive() for f in feeders) and chaos.pending() == 0:
                    print(f"chaos: drained before the schedule ended ({step} onwards skipped)")
                    break
                if step == WORKER_KILL:
                    chaos.kill_worker(rng)
                elif step == SUPERVISOR_KILL:
                    chaos.kill_supervisor(pause=interval)
                elif command is not None:
                    chaos.restart_database(command)
            for feeder in feeders:
                feeder.join()
            wait_for(lambda: chaos.pending() == 0, timeout)
            drain = time.monotonic() - started
        finally:
            chaos.stop()
    conn = connect(url)
    try:
        return tally(
            conn,
            tasks=n,
            events=chaos.events,
            lease_seconds=LEASE_SECONDS,
            drain_seconds=drain,
            db_restart_note=note if command is None else _restart_note(chaos.events, note),
        )
    finally:
        conn.close()


def _restart_note(events: list[Event], note: str) -> str:
    restarts = [e for e in events if e.kind == DB_RESTART]
    if not restarts:
        return "not reached: drained first"
    took = ", ".join(f"{(e.until or e.at) - e.at:.1f} s {e.note}" for e in restarts)
    return f"{note}; took {took}"


def _schedule(kills: int, supervisor_kill: bool, db_restart: bool) -> list[str]:
    steps = [WORKER_KILL] * kills
    if db_restart:
        steps.insert(2 * kills // 3, DB_RESTART)
    if supervisor_kill:
        steps.insert(kills // 3, SUPERVISOR_KILL)
    return steps


def main() -> None:
    """Parse the options, run a baseline (unless told not to) and the chaos run, print both."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("-n", "--tasks", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=12, help="worker SIGKILLs (at least 10)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between faults")
    parser.add_argument("--no-supervisor-kill", action="store_true", help="no supervisor SIGKILL")
    parser.add_argument("--no-db-restart", action="store_true", help="never restart PostgreSQL")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without faults")
    parser.add_argument("--work-ms", type=int, default=5, help="a task works 1 to this many ms")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    run = functools.partial(
        run_chaos, n=args.tasks, interval=args.interval, seed=args.seed, work_ms=args.work_ms
    )
    baseline = None
    if not args.no_baseline:
        with scratch_database() as url:
            quiet = run(url, kills=0, supervisor_kill=False, db_restart=False)
        baseline = quiet.drain_seconds
        print(f"baseline (no faults): drained {args.tasks} tasks in {baseline:.1f} s", flush=True)
    with scratch_database() as url:
        account = run(
            url,
            kills=args.kills,
            supervisor_kill=not args.no_supervisor_kill,
            db_restart=not args.no_db_restart,
        )
    account.baseline_drain_seconds = baseline
    print(render(account), flush=True)
    report("chaos", account.as_dict(), args.json)
    sys.exit(0 if account.ok else 1)


if __name__ == "__main__":
    main()
