"""Idle cost: CPU of api + workers over a quiet minute, and each process's memory."""

from __future__ import annotations

import time

from bench.common import (
    base_parser,
    cpu_seconds,
    free_port,
    report,
    scratch_database,
    start,
    wait_http,
)


def main() -> None:
    """Start `asynctask run`, let it settle, and measure a quiet window."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    port = free_port()
    with scratch_database() as url:
        service = start(["run", "--port", str(port)], url)
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            time.sleep(5)
            processes = service.tree()
            before = {p.pid: cpu_seconds([p]) for p in processes}
            time.sleep(args.seconds)
            each = {p.pid: cpu_seconds([p]) - before[p.pid] for p in processes}
            used = sum(each.values())
            names = {p.pid: " ".join(p.cmdline()).strip() or str(p.pid) for p in processes}
            rss = {
                names[p.pid]: round(p.memory_info().rss / 2**20, 1)
                for p in processes
                if p.is_running()
            }
            cpu = {
                names[pid]: round(100 * seconds / args.seconds, 3) for pid, seconds in each.items()
            }
        finally:
            service.stop()
    report(
        "idle",
        {
            "processes": len(processes),
            "seconds": args.seconds,
            "cpu_percent_of_one_core": round(100 * used / args.seconds, 3),
            "rss_mib_total": round(sum(rss.values()), 1),
            "cpu_percent_each": cpu,
            "rss_mib": rss,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
