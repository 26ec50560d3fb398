"""The floor under one client's create: what an HTTP create costs here without asynctask's code.

One sequential keep-alive client (aiohttp, as bench/api_load.py `--clients 1`) posts one task at a
time to two servers on the same scratch database, in interleaved rounds:

- `bare`: a minimal aiohttp app whose one handler parses the JSON body, runs the same INSERT …
  RETURNING with pg_notify through aiopg (synchronous commit) and answers its row as JSON: no
  validation, middlewares, group commit, metrics or OpenAPI. The least an aiohttp + aiopg service
  can do for a durable create.
- `asynctask`: `asynctask api` (one process), the same request.

Also, in this process, a plain psycopg2 INSERT + commit with no HTTP (`sql`). Each round reports
the median ms per create; the result is the median of the rounds and asynctask's ratio to `bare`
measured in the same rounds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import aiopg
import psycopg2
from aiohttp import web

from bench.common import base_parser, free_port, report, scratch_database, start, wait_http

INSERT = (
    "INSERT INTO tasks (type, priority, max_attempts, data) VALUES (%s, %s, %s, %s)"
    " RETURNING id, type, state, attempts, max_attempts, inserted_at::text,"
    " pg_notify('tasks_normal', id::text)"
)
BODY = {"type": "report", "priority": "normal", "data": {"n": 1}}
PRIORITIES = {"high": 1, "normal": 2, "low": 3}


def bare_server(url: str, port: int) -> None:
    """Serve POST /api/tasks with nothing but the insert (runs in its own process)."""

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        pool = request.app["pool"]
        async with pool.acquire() as conn, conn.cursor() as cur:
            data = json.dumps(body["data"])
            await cur.execute(INSERT, (body["type"], PRIORITIES[body["priority"]], 3, data))
            row = await cur.fetchone()
        names = ("id", "type", "state", "attempts", "max_attempts", "inserted_at")
        return web.json_response(dict(zip(names, row[:6], strict=True)), status=201)

    async def pool(app: web.Application) -> AsyncIterator[None]:
        app["pool"] = await aiopg.create_pool(url, minsize=1, maxsize=4)
        yield
        app["pool"].close()
        await app["pool"].wait_closed()

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/api/tasks", create)
    app.router.add_get("/health", health)
    app.cleanup_ctx.append(pool)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def sequential(base: str, seconds: float) -> float:
    """Median ms per create from one client posting one task at a time."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            async with session.post(f"{base}/api/tasks", json=BODY) as response:
                await response.read()
                assert response.status == 201, response.status
            latencies.append(time.perf_counter() - sent)
    return statistics.median(latencies) * 1000


def plain_sql(url: str, seconds: float) -> float:
    """Median ms per INSERT + commit from psycopg2, no HTTP."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    latencies: list[float] = []
    with conn.cursor() as cur:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            cur.execute(INSERT, ("report", 2, 3, '{"n": 1}'))
            cur.fetchone()
            latencies.append(time.perf_counter() - sent)
    conn.close()
    return statistics.median(latencies) * 1000


def main() -> None:
    """Interleaved rounds of the three; medians and asynctask's ratio to the bare server."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4, help="per server per round")
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"sql": [], "bare": [], "asynctask": []}
    with scratch_database() as url:
        bare_port, api_port = free_port(), free_port()
        bare = start_bare(url, bare_port)
        api = start(["api", "--port", str(api_port)], url)
        try:
            for base in (f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{api_port}"):
                wait_http(f"{base}/health")
                asyncio.run(sequential(base, 1.0))  # warm both
            for _ in range(args.rounds):
                runs["sql"].append(plain_sql(url, args.seconds))
                bases = {"bare": bare_port, "asynctask": api_port}
                for name, port in bases.items():
                    ms = asyncio.run(sequential(f"http://127.0.0.1:{port}", args.seconds))
                    runs[name].append(ms)
        finally:
            api.stop()
            bare.terminate()
            bare.wait(10)
    ratios = [a / b for a, b in zip(runs["asynctask"], runs["bare"], strict=True)]
    result: dict[str, object] = {f"{k}_ms": round(statistics.median(v), 3) for k, v in runs.items()}
    result["asynctask_over_bare"] = round(statistics.median(ratios), 2)
    result["runs"] = {k: [round(x, 3) for x in v] for k, v in runs.items()}
    report("create_floor", result, args.json)


def start_bare(url: str, port: int) -> subprocess.Popen[bytes]:
    """The bare server in its own interpreter (so the client does not share its loop or GIL)."""
    code = f"from bench.create_floor import bare_server; bare_server({url!r}, {port})"
    return subprocess.Popen([sys.executable, "-c", code])


if __name__ == "__main__":
    main()
