"""Where a worker's own CPU goes: cProfile of one worker draining no-op coroutine tasks.

Runs one `Worker` (the high_1 slot, prefetch 100, the demo `report` no-op) on this process's
uvloop against a scratch database holding `--tasks` due tasks, profiles it from start to an empty
queue, and prints the functions with the most time of their own. The profiler inflates Python
calls against C, so read it for the order of costs, and measure a change with `bench.drain_cpu`.
"""

from __future__ import annotations

import asyncio
import cProfile
import multiprocessing
import pstats
import time

import uvloop

from asynctask.core.config_loader import parse_config
from asynctask.core.models import Priority
from asynctask.workers import registry
from asynctask.workers.link import SlotLink
from asynctask.workers.slots import Slot
from asynctask.workers.worker import Worker
from bench.common import UNFINISHED_SQL, base_parser, scalar, scratch_database, wait_for

LOAD_SQL = (
    "INSERT INTO tasks (type, priority, data)"
    " SELECT 'report', 1, jsonb_build_object('report_id', i) FROM generate_series(1, %s) AS i"
)


async def drain(url: str, profile: cProfile.Profile) -> tuple[float, float]:
    """Run one worker until nothing is due or running (polled every 0.25 s); (elapsed, CPU)
    seconds, profiled."""
    config = parse_config(
        {
            "database": {"url": url},
            "handlers": {"report": "asynctask.workers.handlers:report"},
            "priority_queues": {"high": 1, "normal": 0, "low": 0},
        },
        environ={},
    )
    link = SlotLink(multiprocessing.get_context("spawn"), Slot("high_1", Priority.HIGH))
    link.spawning(None)
    worker = Worker(config, link, registry.load_handlers(config))
    started, cpu = time.perf_counter(), time.process_time()
    profile.enable()
    running = asyncio.create_task(worker.run())
    await asyncio.to_thread(wait_for, lambda: not scalar(url, UNFINISHED_SQL), 600)
    profile.disable()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    worker.stop("drained")
    await running
    return elapsed, cpu


def main() -> None:
    """Load, drain with one profiled worker, print the top of the profile."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--top", type=int, default=30, help="functions to print")
    args = parser.parse_args()
    profile = cProfile.Profile()
    with scratch_database() as url:
        scalar(url, LOAD_SQL + " RETURNING NULL", (args.tasks,))
        elapsed, cpu = uvloop.run(drain(url, profile))
    print(f"worker_profile: tasks={args.tasks} elapsed_s={elapsed:.2f} cpu_s={cpu:.2f}")
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
