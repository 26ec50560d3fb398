"""Wait-for-result latency: from a task's completion to the waiter's answer, with idle workers.

Starts `asynctask run` on a scratch database with a handler that holds each task `--hold-ms`
(so the waiter is waiting before the task ends), then, one task at a time: POST it, GET it with
`?wait_seconds=10` on a second keep-alive connection, and time the answer against

- the completion: when the finishing statement's NOTIFY reached a LISTEN connection of the
  benchmark's own (so at its commit; the API's listener gets the same notification), and
- the handler's return (a UDP datagram): that adds the workers' ack batching (up to
  `ack_flush_milliseconds`, 5 ms) before the commit.

With `--waiters N` it measures many waiters instead: N tasks no worker takes (the low pool is 0),
N concurrent requests waiting on them, the API's database connections while they wait, then one
UPDATE ends them all (with a bare `NOTIFY tasks_finished`, which wakes every waiter) and the time
until the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import select
import socket
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import psycopg2
import yaml

from bench.common import (
    ROOT,
    base_parser,
    free_port,
    report,
    scratch_database,
    spread,
    start,
    wait_http,
)


class Completions:
    """A LISTEN tasks_finished connection in a thread: when each id's notification arrived."""

    def __init__(self, url: str) -> None:
        self.arrived: dict[int, float] = {}
        self._conn = psycopg2.connect(url, application_name="bench")
        self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute("LISTEN tasks_finished")
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            if select.select([self._conn], [], [], 0.2)[0]:
                self._conn.poll()
                now = time.time()
                for notify in self._conn.notifies:
                    for text in filter(None, notify.payload.split(",")):
                        self.arrived[int(text)] = now
                self._conn.notifies.clear()

    def at(self, task_id: int, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while task_id not in self.arrived:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no tasks_finished notification for task {task_id}")
            time.sleep(0.001)
        return self.arrived[task_id]

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self._conn.close()


def bench_config(directory: Path) -> Path:
    """config.yaml plus the benchmark's `hold` handler, and no low pool (--waiters' tasks)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["handlers"]["hold"] = "bench.handlers:hold"
    config["priority_queues"]["low"] = 0
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    """Measure N waits and print the percentiles."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--hold-ms", type=float, default=20, help="each task's handler time")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between tasks")
    parser.add_argument("--waiters", type=int, default=0, help="measure N concurrent waiters")
    args = parser.parse_args()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        service = start(
            ["run", "--port", str(port)], url, ASYNCTASK_CONFIG=str(bench_config(Path(tmp)))
        )
        completions = Completions(url)
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            time.sleep(2)  # workers up and idle
            if args.waiters:
                result = asyncio.run(many_waiters(port, url, args.waiters))
            else:
                rounds = measure(port, udp, completions, args)
        finally:
            completions.close()
            service.stop()
    if args.waiters:
        report("wait_many", result, args.json)
        return
    report(
        "wait",
        {
            **{f"commit_{k}": v for k, v in spread([r[0] * 1000 for r in rounds]).items()},
            **{f"handler_{k}": v for k, v in spread([r[1] * 1000 for r in rounds]).items()},
        },
        args.json,
    )


def measure(
    port: int, udp: socket.socket, completions: Completions, args: argparse.Namespace
) -> list[tuple[float, float]]:
    """Per task: (completion's NOTIFY -> answer, handler's return -> answer) in seconds."""
    creates = http.client.HTTPConnection("127.0.0.1", port)
    waits = http.client.HTTPConnection("127.0.0.1", port)
    udp_port = udp.getsockname()[1]
    body = json.dumps(
        {"type": "hold", "priority": "high", "data": {"ms": args.hold_ms, "port": udp_port}}
    )
    rounds = []
    for _ in range(args.tasks):
        creates.request(
            "POST", "/api/tasks", body=body, headers={"Content-Type": "application/json"}
        )
        task_id = json.loads(creates.getresponse().read())["id"]
        waits.request("GET", f"/api/tasks/{task_id}?wait_seconds=10")
        answer = json.loads(waits.getresponse().read())
        answered = time.time()
        if answer["state"] != "completed":
            raise RuntimeError(f"task {task_id} answered {answer['state']}, not completed")
        while True:
            message, _ = udp.recvfrom(100)
            got_id, ended = message.decode().split()
            if int(got_id) == task_id:
                break
        rounds.append((answered - completions.at(task_id), answered - float(ended)))
        time.sleep(args.gap)
    creates.close()
    waits.close()
    return rounds


async def many_waiters(port: int, url: str, count: int) -> dict[str, object]:
    """N waiters on N tasks: connections while they wait, the commit to the last answer."""
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        body = {"tasks": [{"type": "hold", "priority": "low", "data": {}}] * count}
        async with session.post(f"{base}/api/tasks/batch", json=body) as response:
            ids = (await response.json())["ids"]
        waiters = [
            asyncio.create_task(_wait(session, f"{base}/api/tasks/{i}?wait_seconds=60"))
            for i in ids
        ]
        await asyncio.sleep(3)  # every request in and waiting
        conn = psycopg2.connect(url, application_name="bench")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE application_name NOT LIKE 'asynctask worker%%'),"
                " count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name <> 'bench'"
            )
            api_connections, all_connections = cur.fetchone()
            cur.execute(
                "UPDATE tasks SET state = 'completed', finished_at = now() WHERE priority = 3"
            )
            cur.execute("NOTIFY tasks_finished")
            committed = time.monotonic()
        conn.close()
        states = await asyncio.gather(*waiters)
        last = time.monotonic() - committed
    return {
        "waiters": count,
        "completed_answers": states.count("completed"),
        "api_connections_while_waiting": api_connections,
        "all_connections_while_waiting": all_connections,
        "commit_to_last_answer_ms": round(last * 1000, 1),
    }


async def _wait(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        return str((await response.json())["state"])


if __name__ == "__main__":
    main()
