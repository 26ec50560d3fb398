"""The `asynctask` command line: parse it, load the config once, run the command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asynctask.cli import tasks
from asynctask.cli.start import (
    migrate,
    run_all,
    run_api_processes,
    run_workers,
    warn_without_autovacuum,
)
from asynctask.core import queues, stats
from asynctask.core.config import Config
from asynctask.core.config_loader import default_config_path, load_config
from asynctask.core.connections import redact, with_connection
from asynctask.core.errors import AsyncTaskError, ConfigError
from asynctask.core.exposure import check_exposure
from asynctask.core.logs import setup_logging
from asynctask.core.models import PRIORITIES, Priority
from asynctask.embedded import with_database

log = logging.getLogger("asynctask")
# Commands that only look or flip a flag: no embedded-server notice for them.
_QUICK = ("stats", "pause", "resume")


CONFIG_HELP = """\
The config file is the first of: --config PATH (before or after the command),
$ASYNCTASK_CONFIG, ./config.yaml, the default shipped inside the package.
Handler modules (handlers: in the config) are imported from the working
directory, then from the config file's directory."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every command takes --config, before or after its name."""
    # SUPPRESS, not None: a subparser's default would overwrite a --config given before the
    # command (argparse copies every attribute of the subcommand's namespace onto the main one).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, metavar="PATH", help="the config file"
    )
    parser = argparse.ArgumentParser(
        prog="asynctask",
        description="A PostgreSQL-backed task queue service.",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=CONFIG_HELP,
    )
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=summary,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=CONFIG_HELP,
        )

    _add_service_commands(command)
    tasks.add_commands(commands)
    return parser


def _add_service_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The commands that load the config and reach the database (tasks.py adds the API client's)."""
    command("migrate", "create the database if needed and apply schema.sql (safe to repeat)")
    api = command("api", "serve the HTTP API")
    command("workers", "run the supervisor and its worker processes")
    run = command("run", "migrate, then the API and the workers together; Ctrl-C stops all")
    for listener in (api, run):
        listener.add_argument("--host", help="listen address (default: api.host)")
        listener.add_argument("--port", type=int, help="listen port (default: api.port)")
    show = command("stats", "print task counts, queue lag, live workers and the last minute")
    show.add_argument("--json", action="store_true", help="print the JSON of GET /api/stats")
    for name, does in (("pause", "stop"), ("resume", "restart")):
        paused = command(name, f"{does} the workers claiming a priority's tasks (all hosts)")
        paused.add_argument("priority", choices=[p.value for p in PRIORITIES])


class VersionAction(argparse.Action):
    """--version: prints the version; looks it up only then (importlib.metadata is slow to load)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show the version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"asynctask {version()}")
        parser.exit()


def version() -> str:
    """The installed distribution's version (0.0.0 when run from a bare source tree)."""
    import importlib.metadata  # ~15 ms of every start, for a flag rarely given

    try:
        return importlib.metadata.version("asynctask")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


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
    import psycopg2.errors  # ~9 ms of every start, for this command only

    url, timeout = str(config.database.url), config.database.connect_timeout_seconds
    try:
        return await with_connection(url, timeout, stats.read_snapshot)
    except psycopg2.errors.UndefinedTable:
        raise AsyncTaskError(
            f"the database {redact(url)} has no tasks table; run asynctask migrate"
        ) from None


def stats_table(snapshot: stats.Snapshot) -> str:
    """The snapshot as text: counts, lag, live workers per priority; last minute; warnings."""
    states = list(next(iter(snapshot.counts.values())))
    header = ["priority", *states, "lag (s)", "workers"]
    lag = snapshot.queue_lag_seconds
    rows = [
        [
            priority,
            *(str(counts[state]) for state in states),
            f"{lag[priority]:.1f}",
            str(snapshot.workers[priority]),
        ]
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
    warnings = [
        f"warning: {priority} tasks are due and no live {priority} worker serves this database;"
        f" they wait until one does (priority_queues.{priority} is 0 where workers run?)"
        for priority in snapshot.due_without_workers
    ]
    return "\n".join([*lines, "", f"last minute: {finished}", *warnings])


def _listen_address(config: Config, args: argparse.Namespace) -> tuple[str, int]:
    host = args.host or config.api.host
    port = args.port if args.port is not None else config.api.port
    if not 1 <= port <= 65535:
        raise AsyncTaskError(f"--port: {port} is not allowed (a TCP port from 1 to 65535)")
    return host, port


def add_handler_paths(config_path: Path) -> None:
    """Put the working directory, then the config file's directory, first on sys.path.

    Handlers are named `module:function` relative to where the user runs asynctask (as gunicorn
    and celery do), or to the config file that names them, so `asynctask --config
    myapp/config.yaml workers` finds myapp/'s modules from the parent folder too. A console script
    puts neither on sys.path by itself; spawned workers inherit sys.path.
    """
    # abspath, not resolve(): a Kubernetes ConfigMap's file is a symlink into a hidden folder.
    wanted = [os.getcwd()]
    if config_path.is_file():
        wanted.append(os.path.dirname(os.path.abspath(config_path)))
    wanted = list(dict.fromkeys(wanted))
    sys.path[:] = wanted + [entry for entry in sys.path if entry not in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command in tasks.COMMANDS:
        return tasks.run(args)  # a client of a running API: no config, no database
    path: Path | None = getattr(args, "config", None)
    add_handler_paths(path or default_config_path(os.environ))
    try:
        config = load_config(path)
        if args.command in ("api", "run"):
            check_exposure(config.api, args.host or config.api.host)
        if args.command in ("api", "workers", "run") and not config.handlers:
            raise ConfigError(
                "handlers: no task type is configured, so there is nothing to accept or run"
                " (add one, e.g. handlers: {report: my_module:report})"
            )
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
        host, port = _listen_address(config, args)
        warn_without_autovacuum(config)
        if config.api.processes > 1:
            return run_api_processes(config, host, port)
        from asynctask.service.app import serve

        serve(config, host, port)
        return 0
    if args.command == "workers":
        warn_without_autovacuum(config)
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
    warn_without_autovacuum(config)
    return run_all(config, host, port)
