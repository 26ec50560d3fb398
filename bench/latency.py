"""Wake-up latency: from sending POST /api/tasks to the handler starting, with idle workers.

Starts `asynctask run` (migrate + api + workers) on a scratch database with a handler that sends
a UDP datagram when it starts, then creates tasks one at a time, spaced so the workers are idle.
"""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import (
    ROOT,
    base_parser,
    free_port,
    percentile,
    report,
    scratch_database,
    spread,
    start,
    wait_http,
)


def bench_config(directory: Path) -> Path:
    """config.yaml plus the benchmark's `stamp` handler."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["handlers"]["stamp"] = "bench.handlers:stamp"
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    """Measure N wake-ups and print the percentiles."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--priority", default="high", choices=["high", "normal", "low"])
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between tasks")
    args = parser.parse_args()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    udp_port = udp.getsockname()[1]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        service = start(
            ["run", "--port", str(port)], url, ASYNCTASK_CONFIG=str(bench_config(Path(tmp)))
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            time.sleep(2)  # workers up and idle
            latencies = measure(port, udp, udp_port, args.tasks, args.priority, args.gap)
        finally:
            service.stop()
    ms = [start * 1000 for start, _ in latencies]
    answered_ms = [answer * 1000 for _, answer in latencies]
    report(
        "latency",
        {
            **spread(ms),
            # The API's share: from sending the POST to reading its 201.
            "post_p50_ms": round(percentile(answered_ms, 0.50), 2),
        },
        args.json,
    )


def measure(
    port: int, udp: socket.socket, udp_port: int, count: int, priority: str, gap: float
) -> list[tuple[float, float]]:
    """Create `count` tasks one by one; per task (send-to-handler-start, send-to-201) seconds.

    One keep-alive connection, as a real client would hold: the connect is not the server's time.
    """
    client = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    body = json.dumps({"type": "stamp", "priority": priority, "data": {"port": udp_port}})
    latencies = []
    for _ in range(count):
        sent = time.time()
        client.request("POST", "/api/tasks", body=body, headers=headers)
        response = client.getresponse()
        task_id = json.loads(response.read())["id"]
        answered = time.time()
        while True:
            message, _ = udp.recvfrom(100)
            got_id, started = message.decode().split()
            if int(got_id) == task_id:
                break
        latencies.append((float(started) - sent, answered - sent))
        time.sleep(gap)
    client.close()
    return latencies


if __name__ == "__main__":
    main()
