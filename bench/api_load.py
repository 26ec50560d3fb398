"""HTTP create throughput: single POST /api/tasks with concurrent keep-alive clients, and batches.

Starts `asynctask api` alone (no workers, so the database does only the inserts) on a scratch
database. Single: `--clients` connections each posting one task at a time for `--seconds`.
Unique: the same for `--unique-seconds`, each task with its own `unique_key` (every create
inserts, through the unique-key statement), and the ratio to the plain creates of this run.
Batch: `--batches` requests of `--batch-size` tasks through POST /api/tasks/batch.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.common import (
    base_parser,
    free_port,
    percentile,
    report,
    scratch_database,
    start,
    wait_http,
)


async def single(base: str, clients: int, seconds: float, name: str = "single") -> dict[str, float]:
    """Concurrent one-task creates; returns throughput and latency percentiles.

    `name` "unique" gives every task a unique_key of its own.
    """
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(number: int) -> None:
            nonlocal errors
            body: dict[str, object] = {"type": "report", "priority": "normal", "data": {"n": 1}}
            sent_so_far = 0
            while time.monotonic() < deadline:
                if name == "unique":
                    sent_so_far += 1
                    body["unique_key"] = f"{number}-{sent_so_far}"
                sent = time.perf_counter()
                async with session.post(f"{base}/api/tasks", json=body) as response:
                    await response.read()
                    if response.status != 201:
                        errors += 1
                latencies.append(time.perf_counter() - sent)

        started = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.monotonic() - started
    ms = [value * 1000 for value in latencies]
    return {
        f"{name}_tasks_per_s": round(len(ms) / elapsed),
        f"{name}_p50_ms": round(percentile(ms, 0.5), 2),
        f"{name}_p99_ms": round(percentile(ms, 0.99), 2),
        f"{name}_errors": errors,
    }


async def batch(base: str, batches: int, size: int) -> dict[str, float]:
    """Sequential batch creates; returns tasks per second and per-request latency."""
    tasks = [
        {"type": "report", "priority": ("high", "normal", "low")[i % 3], "data": {"i": i}}
        for i in range(size)
    ]
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        for _ in range(batches):
            sent = time.perf_counter()
            async with session.post(f"{base}/api/tasks/batch", json={"tasks": tasks}) as response:
                body = await response.json()
                assert response.status == 201, body
                assert len(body["ids"]) == size
            latencies.append(time.perf_counter() - sent)
        elapsed = time.monotonic() - started
    return {
        "batch_tasks_per_s": round(batches * size / elapsed),
        "batch_request_p50_ms": round(percentile([v * 1000 for v in latencies], 0.5), 1),
    }


def main() -> None:
    """Run both measurements against the API (one process, or --processes sharing the port)."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--unique-seconds", type=float, default=10, help="0: no unique phase")
    parser.add_argument("--batches", type=int, default=20, help="0: no batch phase")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=1, help="api.processes (SO_REUSEPORT)")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with scratch_database() as url:
        service = start(
            ["api", "--port", str(port)], url, ASYNCTASK_API_PROCESSES=str(args.processes)
        )
        try:
            wait_http(f"{base}/health")
            result = asyncio.run(single(base, args.clients, args.seconds))
            if args.unique_seconds > 0:
                result.update(
                    asyncio.run(single(base, args.clients, args.unique_seconds, "unique"))
                )
                ratio = result["unique_tasks_per_s"] / result["single_tasks_per_s"]
                result["unique_ratio"] = round(ratio, 3)
            if args.batches > 0:
                result.update(asyncio.run(batch(base, args.batches, args.batch_size)))
        finally:
            service.stop()
    report("api_load", {"clients": args.clients, "processes": args.processes, **result}, args.json)


if __name__ == "__main__":
    main()
