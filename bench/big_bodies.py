"""Large request bodies: the API's peak RSS and /health latency under 16 concurrent maximum bodies.

Starts `asynctask api` alone on a scratch database with the default limits. Each shape sends
`--rounds` waves of `--concurrency` bodies of `api.max_body_bytes` (1 MiB) at once, while a
separate process sends GET /health every 10 ms (open loop: a probe is sent when due even while
earlier ones wait, so a 2 s stall shows as 200 slow probes, not one). Reported per
shape: the API's peak RSS during it (VmHWM, reset before the shape), and the probe's p50/p99/max.

Shapes (each body is just under 1 MiB):
  batch    POST /api/tasks/batch: 10,000 small tasks (valid, so they are inserted)
  objects  POST /api/tasks: one task whose data is a list of tiny objects, the most Python
           objects per byte of JSON (stored before the per-task data limit, refused after it)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import base_parser, free_port, report, scratch_database, spread, start, wait_http

BODY_BYTES = 1024 * 1024 - 1024  # under api.max_body_bytes, leaving room for the envelope
BATCH_MAX = 10_000
PROBE_SECONDS = 0.01
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=60)


def batch_body() -> bytes:
    """A batch of small tasks filling BODY_BYTES."""
    empty = len(json.dumps({"type": "report", "data": {"n": 1, "tag": ""}}))
    per_task = (BODY_BYTES - 20) // BATCH_MAX - 2  # each is followed by ", "
    task = json.dumps({"type": "report", "data": {"n": 1, "tag": "x" * (per_task - empty)}})
    return b'{"tasks": [' + b", ".join([task.encode()] * BATCH_MAX) + b"]}"


def objects_body() -> bytes:
    """One task whose data is a list of tiny objects filling BODY_BYTES."""
    item = b'{"a":0}'
    count = (BODY_BYTES - 60) // (len(item) + 1)
    return b'{"type": "report", "data": {"items": [' + b",".join([item] * count) + b"]}}"


def probe(port: int, stop: Any, out: Any) -> None:
    """GET /health every PROBE_SECONDS until `stop` is set; send the latencies in ms."""
    out.send(asyncio.run(_probes(port, stop)))


async def _probes(port: int, stop: Any) -> list[float]:
    # Open loop: a probe is sent when due, on its own connection if the others are still waiting,
    # and its latency counts from when it was due; a 2 s stall is 200 slow probes, not one.
    latencies: list[float] = []
    url = f"http://127.0.0.1:{port}/health"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(due: float) -> None:
            # A probe that fails (the API let it wait past the client's timeout) counts with the
            # time it waited: leaving it out would hide the worst stalls.
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=PROBE_TIMEOUT) as response:
                    await response.read()
            latencies.append((time.perf_counter() - due) * 1000)

        pending = set()
        due = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(one(due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            due += PROBE_SECONDS
        await asyncio.gather(*pending)
    return latencies


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_mib(pid: int) -> float:
    """VmHWM of the process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def waves(base: str, path: str, body: bytes, rounds: int, concurrency: int) -> list[int]:
    """Send `rounds` waves of `concurrency` identical bodies; the statuses."""
    statuses: list[int] = []
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            async with session.post(base + path, data=body, headers=headers) as response:
                await response.read()
                statuses.append(response.status)

        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(concurrency)))
    return statuses


def shape(port: int, pid: int, name: str, rounds: int, concurrency: int) -> dict[str, Any]:
    """One shape under the probe: peak RSS, the probe's spread, the answers' statuses."""
    if name == "batch":
        path, body = "/api/tasks/batch", batch_body()
    else:
        path, body = "/api/tasks", objects_body()
    reset_peak(pid)
    receive, send = multiprocessing.Pipe(duplex=False)
    stop = multiprocessing.Event()
    prober = multiprocessing.Process(target=probe, args=(port, stop, send))
    prober.start()
    time.sleep(0.5)  # the probe's own baseline before the first wave
    started = time.monotonic()
    statuses = asyncio.run(waves(f"http://127.0.0.1:{port}", path, body, rounds, concurrency))
    elapsed = time.monotonic() - started
    stop.set()
    latencies: list[float] = receive.recv()
    prober.join()
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    health = spread(latencies)
    return {
        f"{name}_peak_rss_mib": round(peak_mib(pid), 1),
        f"{name}_health_p50_ms": health["p50_ms"],
        f"{name}_health_p99_ms": health["p99_ms"],
        f"{name}_health_max_ms": health["max_ms"],
        f"{name}_probes": health["tasks"],
        f"{name}_seconds": round(elapsed, 1),
        f"{name}_statuses": counts,
    }


def main() -> None:
    """Both shapes against one API process."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--shapes", default="batch,objects")
    parser.add_argument(
        "--max-data-bytes",
        type=int,
        help="api.max_data_bytes for the API (1048576 lets the objects shape be stored, as before"
        " the limit existed; versions without the setting ignore it)",
    )
    args = parser.parse_args()
    port = free_port()
    result: dict[str, Any] = {"concurrency": args.concurrency, "rounds": args.rounds}
    limits = {}
    if args.max_data_bytes:
        limits["ASYNCTASK_API_MAX_DATA_BYTES"] = str(args.max_data_bytes)
        result["max_data_bytes"] = args.max_data_bytes
    with scratch_database() as url:
        service = start(["api", "--port", str(port)], url, **limits)
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            for name in args.shapes.split(","):
                result.update(shape(port, service.process.pid, name, args.rounds, args.concurrency))
        finally:
            service.stop()
    report("big_bodies", result, args.json)


if __name__ == "__main__":
    main()
