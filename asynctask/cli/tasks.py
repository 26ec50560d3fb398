"""`asynctask enqueue` and `asynctask tasks list|show|cancel|retry`: a running API's client.

These commands need neither a config file nor a database: they talk to the API over HTTP with
asynctask.Client (--url/--token, else ASYNCTASK_URL/ASYNCTASK_TOKEN, else http://127.0.0.1:4000).
Exit codes: 0 done, 1 the task failed (or was cancelled), 2 a usage or API error (the API's
message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asynctask.core.models import PRIORITIES, STATES

if TYPE_CHECKING:
    from asynctask.client import Client, TaskRecord

COMMANDS = ("enqueue", "tasks")
_FAILED = 1
_ERROR = 2


class UsageError(Exception):
    """A bad argument the parser could not catch (its message names it)."""


def add_commands(commands: Any) -> None:
    """Add `enqueue` and `tasks` to the `asynctask` parser's subcommands."""
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--url", help="the API (default: $ASYNCTASK_URL, else http://127.0.0.1:4000)")
    api.add_argument("--token", help="bearer token (default: $ASYNCTASK_TOKEN)")
    api.add_argument("--json", action="store_true", help="print JSON for scripts")
    about = "create a task through the API"
    enqueue = commands.add_parser("enqueue", parents=[api], help=about, description=about)
    enqueue.add_argument("type", help="the task type (a configured handler)")
    enqueue.add_argument("--data", default=None, help="a JSON object, or @FILE (@- for stdin)")
    enqueue.add_argument("--priority", choices=PRIORITIES, help="default: normal")
    enqueue.add_argument("--max-attempts", type=int, help="default: the server's max_attempts")
    enqueue.add_argument("--delay", type=float, dest="delay_seconds", help="run after N seconds")
    enqueue.add_argument("--unique-key", help="no new task while one with this key is unfinished")
    enqueue.add_argument("--wait", action="store_true", help="wait, then print its result")
    enqueue.add_argument("--timeout", type=float, help="with --wait: give up after N seconds")
    about = "list, show, cancel or retry tasks through the API"
    tasks = commands.add_parser("tasks", help=about, description=about)
    actions = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[api], help="tasks, newest first")
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--priority", choices=PRIORITIES)
    listing.add_argument("--type")
    listing.add_argument("--limit", type=int, default=20, help="at most N tasks (default 20)")
    for action, text in (("show", "one task"), ("cancel", "cancel"), ("retry", "run again")):
        actions.add_parser(action, parents=[api], help=text).add_argument("id", type=int)


def run(args: argparse.Namespace) -> int:
    """Run `enqueue` or `tasks ...`; the exit code."""
    from asynctask.client import APIError, Client  # only these commands need httpx

    try:
        with Client(args.url, args.token) as client:
            if args.command == "enqueue":
                return _enqueue(client, args)
            return _tasks(client, args)
    except UsageError as exc:
        print(f"asynctask {args.command}: {exc}", file=sys.stderr)
    except APIError as exc:
        print(f"asynctask {args.command}: {exc}", file=sys.stderr)
    return _ERROR


def _enqueue(client: Client, args: argparse.Namespace) -> int:
    task = client.create(
        args.type,
        read_data(args.data),
        priority=args.priority,
        max_attempts=args.max_attempts,
        delay_seconds=args.delay_seconds,
        unique_key=args.unique_key,
    )
    if not args.wait:
        _print_task(task, args.json)
        return 0
    task = client.wait(task.id, args.timeout)
    if args.json:
        _print_task(task, True)
    elif task.succeeded:
        print(json.dumps(task.result, indent=2))
    if task.succeeded:
        return 0
    print(f"asynctask enqueue: task {task.id} {task.state}: {task.last_error}", file=sys.stderr)
    return _FAILED


def _tasks(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.limit < 1:
            raise UsageError(f"--limit: {args.limit} is not allowed (1 or more)")
        found: list[TaskRecord] = []
        filters = {"state": args.state, "priority": args.priority, "type": args.type}
        for task in client.list(**filters, page_size=min(args.limit, 1000)):
            found.append(task)
            if len(found) >= args.limit:
                break
        if args.json:
            print(json.dumps([task.as_json() for task in found]))
        else:
            print(task_table(found))
        return 0
    action = {"show": client.get, "cancel": client.cancel, "retry": client.retry}[args.action]
    _print_task(action(args.id), args.json)
    return 0


def read_data(value: str | None) -> dict[str, Any] | None:
    """--data: a JSON object given inline, or @FILE, or @- (stdin)."""
    if value is None:
        return None
    source = "--data"
    if value.startswith("@"):
        source = f"--data {value}"
        try:
            value = sys.stdin.read() if value == "@-" else Path(value[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"{source}: {exc.strerror}") from None
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source}: must be a JSON object, not {type(data).__name__}")
    return data


def _print_task(task: TaskRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps(task.as_json()))
        return
    fields = task.as_json()
    width = max(len(key) for key in fields)
    for key, value in fields.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"{key.ljust(width)}  {'-' if shown is None else shown}")


def task_table(tasks: list[TaskRecord]) -> str:
    """Tasks as a plain-text table, one line each."""
    header = ["id", "type", "priority", "state", "attempts", "inserted", "last error"]
    rows = [
        [
            str(task.id),
            task.type,
            task.priority,
            task.state,
            f"{task.attempts}/{task.max_attempts}",
            task.inserted_at.strftime("%Y-%m-%d %H:%M:%S"),
            (task.last_error or "").splitlines()[0][:50] if task.last_error else "",
        ]
        for task in tasks
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines)
