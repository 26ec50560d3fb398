"""What open dashboards cost: the API's CPU and the database's work with 0, 1 and 100 streams.

Starts `asynctask api` on a scratch database holding some tasks, then for each phase opens that
many `GET /api/events` streams (Accept: text/event-stream) from a separate client process, and
measures over --seconds: the API process's CPU (% of one core), the transactions the database
committed (pg_stat_database.xact_commit of the scratch database: nobody else uses it), and the
events each stream received. One shared refresh per second means the database's work is the same
for 1 and 100 streams, and each stream costs the API one write per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

import aiohttp
import psutil
import psycopg2

from bench.common import base_parser, free_port, report, scratch_database, start, wait_http


async def _listen(url: str, streams: int) -> None:
    """Client mode: hold `streams` event streams open and read them until killed."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def one() -> None:
            async with session.get(url, headers={"Accept": "text/event-stream"}) as response:
                async for line in response.content:
                    if line.startswith(b"data: "):
                        print("event", flush=True)

        await asyncio.gather(*(one() for _ in range(streams)))


def _commits(url: str) -> int:
    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return int(cur.fetchone()[0])


def phase(url: str, api: psutil.Process, events_url: str, streams: int, seconds: float) -> dict:
    """Measure one phase with `streams` open streams."""
    client = None
    if streams:
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.streams", "--client", str(streams), events_url],
            stdout=subprocess.PIPE,
        )
        time.sleep(3)  # every stream open and past its first event
    cpu0, commits0, started = sum(api.cpu_times()[:2]), _commits(url), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    cpu = sum(api.cpu_times()[:2]) - cpu0
    commits = _commits(url) - commits0
    events = 0
    if client is not None:
        client.terminate()
        out, _ = client.communicate()
        events = out.count(b"event")
    return {
        "streams": streams,
        "api_cpu_pct": round(100 * cpu / elapsed, 2),
        "db_commits_per_s": round(commits / elapsed, 2),
        "events_per_stream_per_s": round(events / streams / (elapsed + 3), 2) if streams else 0,
    }


def main() -> None:
    """Run the three phases and print one line per phase."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--client", nargs=2, metavar=("STREAMS", "URL"), help=argparse_hidden())
    args = parser.parse_args()
    if args.client:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_listen(args.client[1], int(args.client[0])))
        return
    with scratch_database() as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("INSERT INTO tasks (type, priority) SELECT 'report', 1 + i % 3"
                        " FROM generate_series(1, 10000) AS i")  # fmt: skip
        conn.close()
        port = free_port()
        service = start(["api", "--port", str(port)], url)
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            api = psutil.Process(service.process.pid)
            events = f"http://127.0.0.1:{port}/api/events"
            results = [phase(url, api, events, n, args.seconds) for n in (0, 1, 100)]
        finally:
            service.stop()
    for result in results:
        report("streams", result, None)
    added = results[2]["api_cpu_pct"] - results[1]["api_cpu_pct"]
    report(
        "streams",
        {"api_cpu_added_by_99_more_streams_pct": round(added, 2), "phases": results},
        args.json,
    )


def argparse_hidden() -> str:
    """Help text of the client mode (used by the benchmark itself)."""
    return "internal: hold STREAMS event streams on URL open"


if __name__ == "__main__":
    main()
