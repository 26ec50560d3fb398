"""The `asynctask` command line: parse it, load the config once, run the command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from asynctask.cli.start import migrate, run_all, run_workers
from asynctask.core import queues, stats
from asynctask.core.config import Config, load_config
from asynctask.core.connections import with_connection
from asynctask.core.errors import AsyncTaskError, ConfigError
from asynctask.core.logs import setup_logging
from asynctask.core.models import PRIORITIES, Priority
from asynctask.embedded import with_database

log = logging.getLogger("asynctask")
# Commands that only look or flip a flag: no embedded-server notice for them.
_QUICK = ("stats", "pause", "resume")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every command takes --config."""
    parser = argparse.ArgumentParser(
        prog="asynctask", description="A PostgreSQL-backed task queue service."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $ASYNCTASK_CONFIG, else ./config.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("migrate", help="create the database if needed and apply schema.sql")
    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", help="listen address (default: api.host)")
    api.add_argument("--port", type=int, help="listen port (default: api.port)")
    commands.add_parser("workers", help="run the supervisor and its worker processes")
    run = commands.add_parser("run", help="migrate, then api and workers together")
    run.add_argument("--host", help="listen address (default: api.host)")
    run.add_argument("--port", type=int, help="listen port (default: api.port)")
    show = commands.add_parser("stats", help="print task counts, queue lag and the last minute")
    show.add_argument("--json", action="store_true", help="print the JSON of GET /api/stats")
    for name, does in (("pause", "stop"), ("resume", "restart")):
        command = commands.add_parser(name, help=f"{does} the workers claiming a priority's tasks")
        command.add_argument("priority", choices=[p.value for p in PRIORITIES])
    return parser


async def set_paused(config: Config, priority: Priority, paused: bool) -> str:
    """Pause or resume a priority in the database directly; one line saying its state."""
    url, timeout = str(config.database.url), config.database.connect_timeout_seconds
    state = await with_connection(
        url, timeout, lambda conn: queues.set_paused(conn, priority, paused)
    )
    since = "" if state.since is None else f" since {state.since.isoformat(timespec='seconds')}"
    return f"{priority}: {'paused' if state.paused else 'running'}{since}"


async def read_stats(config: Config) -> stats.Snapshot:
    """One statistics snapshot straight from the database (no cache: one run, one query)."""
    url, timeout = str(config.database.url), config.database.connect_timeout_seconds
    return await with_connection(url, timeout, stats.read_snapshot)


def stats_table(snapshot: stats.Snapshot) -> str:
    """The snapshot as plain text: a priority x state table with the lag, then the last minute."""
    states = list(next(iter(snapshot.counts.values())))
    header = ["priority", *states, "lag (s)"]
    lag = snapshot.queue_lag_seconds
    rows = [
        [priority, *(str(counts[state]) for state in states), f"{lag[priority]:.1f}"]
        for priority, counts in snapshot.counts.items()
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    finished = ", ".join(f"{state} {n}" for state, n in snapshot.last_minute.items())
    return "\n".join([*lines, "", f"last minute: {finished}"])


def _listen_address(config: Config, args: argparse.Namespace) -> tuple[str, int]:
    host = args.host or config.api.host
    port = args.port if args.port is not None else config.api.port
    if not 1 <= port <= 65535:
        raise AsyncTaskError(f"--port: {port} is not allowed (a TCP port from 1 to 65535)")
    return host, port


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    # Handlers are named `module:function` relative to where the user runs asynctask (as gunicorn
    # and celery do); a console script does not put the working directory on sys.path by itself.
    # Spawned workers inherit sys.path, so they import the same modules.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        config = load_config(args.config)
    except AsyncTaskError as exc:
        print(f"asynctask: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    try:
        # The embedded server's long notice is for the commands that run it, not for a look.
        config = with_database(config, announce=args.command not in _QUICK)
    except ConfigError as exc:
        print(f"asynctask: {exc}", file=sys.stderr)
        return 2
    except AsyncTaskError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        return _dispatch(args, config)
    except AsyncTaskError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    if args.command == "migrate":
        asyncio.run(migrate(config))
        return 0
    if args.command == "api":
        from asynctask.service.app import serve

        host, port = _listen_address(config, args)
        serve(config, host, port)
        return 0
    if args.command == "workers":
        return run_workers(config)
    if args.command in ("pause", "resume"):
        print(asyncio.run(set_paused(config, Priority(args.priority), args.command == "pause")))
        return 0
    if args.command == "stats":
        snapshot = asyncio.run(read_stats(config))
        print(json.dumps(snapshot.as_json()) if args.json else stats_table(snapshot))
        return 0
    # run: the local all-in-one
    host, port = _listen_address(config, args)
    asyncio.run(migrate(config))
    return run_all(config, host, port)
