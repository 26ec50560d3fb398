"""Scheduled tasks: how late after its `scheduled_at` a task starts (never early).

Starts `asynctask run` (migrate + api + workers, the repository's config.yaml plus the `stamp`
handler, which sends a UDP datagram when it starts) on a scratch database.

- idle: `--tasks` tasks created one by one with POST /api/tasks, each due `--lead` seconds after
  its create and `--gap` seconds after the previous one, so the workers are idle at each due time;
  a pool leader's timer starts them (moved by the create's notification, or read from the index).
- spread: `--spread-tasks` tasks created ahead with POST /api/tasks/batch, due evenly over the
  `--window` seconds that follow; the workers keep up with a task every 0.6 ms by default.

Lateness is the handler's start minus the task's `scheduled_at` as stored (the database and the
handler share this machine's clock). "early" counts tasks that started before their time.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    base_parser,
    free_port,
    report,
    scratch_database,
    spread,
    start,
    wait_http,
)
from bench.latency import bench_config

BATCH = 5_000  # items of about 150 bytes: within the default 1 MiB body


class Stamps:
    """Collects the `stamp` handler's datagrams ("<id> <epoch>") on a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.started: dict[int, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                message = self.sock.recv(100)
            except TimeoutError:
                continue
            task_id, at = message.decode().split()
            self.started.setdefault(int(task_id), float(at))

    def wait_for(self, ids: set[int], timeout: float) -> None:
        """Until every id has started, or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not ids <= self.started.keys() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the reader."""
        self._stop = True
        self._thread.join()
        self.sock.close()


def post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST JSON, return the JSON answer."""
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def iso(epoch: float) -> str:
    """Epoch seconds as ISO 8601 in UTC, to the microsecond (what PostgreSQL stores)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def idle(base: str, stamps: Stamps, count: int, lead: float, gap: float) -> dict[str, float]:
    """One create at a time, each due `lead` s later; lateness of each start, in ms."""
    due: dict[int, float] = {}
    for _ in range(count):
        task = post(
            base,
            "/api/tasks",
            {
                "type": "stamp",
                "priority": "high",
                "data": {"port": stamps.port},
                "delay_seconds": lead,
            },
        )
        assert task["state"] == "scheduled", task
        due[task["id"]] = datetime.fromisoformat(task["scheduled_at"]).timestamp()
        time.sleep(gap)
    stamps.wait_for(set(due), lead + 5)
    return lateness("idle", due, stamps)


def spread_over(
    base: str, stamps: Stamps, count: int, window: float, ahead: float
) -> dict[str, float]:
    """`count` tasks due evenly over `window` s from `ahead` s from now; lateness in ms."""
    first = time.time() + ahead
    times = [round(first + window * i / count, 6) for i in range(count)]
    due: dict[int, float] = {}
    for offset in range(0, count, BATCH):
        chunk = times[offset : offset + BATCH]
        tasks = [
            {
                "type": "stamp",
                "priority": "high",
                "data": {"port": stamps.port},
                "scheduled_at": iso(t),
            }
            for t in chunk
        ]
        ids = post(base, "/api/tasks/batch", {"tasks": tasks})["ids"]
        due.update(zip(ids, chunk, strict=True))
    created = time.time()
    assert created < first, f"creating took too long: {created - first:.1f} s past the first due"
    stamps.wait_for(set(due), first + window - time.time() + 10)
    return lateness("spread", due, stamps)


def lateness(name: str, due: dict[int, float], stamps: Stamps) -> dict[str, float]:
    """Percentiles of (start - scheduled_at) in ms, with the early and the missing counts."""
    ms = [(stamps.started[i] - at) * 1000 for i, at in due.items() if i in stamps.started]
    summary = {f"{name}_{key}": value for key, value in spread(ms).items()}
    summary[f"{name}_min_ms"] = round(min(ms), 2)
    summary[f"{name}_early"] = sum(1 for value in ms if value < 0)
    summary[f"{name}_missing"] = len(due) - len(ms)
    return summary


def main() -> None:
    """Run the chosen phases against one `asynctask run` and print the percentiles."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--phase", choices=["idle", "spread", "both"], default="both")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--lead", type=float, default=0.25, help="seconds from create to due")
    parser.add_argument("--gap", type=float, default=0.06, help="seconds between creates")
    parser.add_argument("--spread-tasks", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--ahead", type=float, default=8.0, help="seconds before the first is due")
    args = parser.parse_args()
    stamps = Stamps()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        service = start(
            ["run", "--port", str(port)], url, ASYNCTASK_CONFIG=str(bench_config(Path(tmp)))
        )
        try:
            wait_http(f"{base}/health")
            time.sleep(2)  # workers up and idle
            if args.phase in ("idle", "both"):
                result.update(idle(base, stamps, args.tasks, args.lead, args.gap))
            if args.phase in ("spread", "both"):
                result.update(spread_over(base, stamps, args.spread_tasks, args.window, args.ahead))
        finally:
            service.stop()
            stamps.close()
    report("scheduled", result, args.json)


if __name__ == "__main__":
    main()
