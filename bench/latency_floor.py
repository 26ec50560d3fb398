"""The floor under the wake-up latency: the database and the OS alone, without asynctask's Python.

A reference for bench/latency.py, as the issue's "bare loop" is for the peers: a plain psycopg2
client inserts a task and NOTIFYs in one autocommit statement (synchronous commit, as the API
does), and a second process, LISTENing on the connection it claims with (as a worker does), runs a
prepared claim committed asynchronously and sends a UDP datagram. Time from sending the INSERT to
the datagram's timestamp, one task at a time, `--gap` apart so every process is idle, as in
bench/latency.py. No HTTP, no asyncio, no aiopg.
"""

from __future__ import annotations

import multiprocessing
import select
import socket
import time
import uuid

import psycopg2

from bench.common import base_parser, report, scratch_database, spread

CLAIM = (
    "PREPARE claim (uuid) AS"
    " WITH due AS (SELECT id FROM tasks WHERE state IN ('available', 'retrying')"
    "  AND priority = 1 AND scheduled_at <= now() ORDER BY scheduled_at, id LIMIT 1"
    "  FOR UPDATE SKIP LOCKED)"
    " UPDATE tasks AS t SET state = 'running', attempts = t.attempts + 1, lock_token = $1,"
    "  locked_by = 'floor', started_at = now(), updated_at = now()"
    " FROM due, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
    " WHERE t.id = due.id RETURNING t.id"
)
INSERT = (
    "INSERT INTO tasks (type, priority, data) VALUES ('floor', 1, '{}')"
    " RETURNING id, pg_notify('tasks_high', id::text)"
)


def claimer(url: str, udp_port: int) -> None:
    """LISTEN and claim on one connection; report each claimed id with its time by UDP."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("LISTEN tasks_high")
    cur.execute(CLAIM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while True:
        select.select([conn], [], [])
        conn.poll()
        while conn.notifies:
            conn.notifies.pop()
            cur.execute("EXECUTE claim (%s)", (str(uuid.uuid4()),))
            for (task_id,) in cur.fetchall():
                udp.sendto(f"{task_id} {time.time()}".encode(), ("127.0.0.1", udp_port))


def main() -> None:
    """Measure N insert-to-claim times and print the percentiles."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between tasks")
    args = parser.parse_args()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    with scratch_database() as url:
        process = multiprocessing.get_context("spawn").Process(
            target=claimer, args=(url, udp.getsockname()[1]), daemon=True
        )
        process.start()
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        time.sleep(1)  # the claimer LISTENs
        latencies = []
        try:
            for _ in range(args.tasks):
                sent = time.time()
                cur.execute(INSERT)
                task_id = cur.fetchone()[0]
                while True:
                    got_id, started = udp.recvfrom(100)[0].decode().split()
                    if int(got_id) == task_id:
                        break
                latencies.append((float(started) - sent) * 1000)
                time.sleep(args.gap)
        finally:
            process.terminate()
            process.join()
            conn.close()
    report("latency_floor", spread(latencies), args.json)


if __name__ == "__main__":
    main()
