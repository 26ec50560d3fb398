"""A real `asynctask api` (and optionally `asynctask workers`) as subprocesses, for client tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import TEST_HANDLERS

ROOT = Path(__file__).resolve().parent.parent
# Types only one test creates, so that test can list exactly its own tasks on the shared stack.
OWN_TYPES = ("listed", "listed_async", "listed_cli")


@dataclass(frozen=True)
class Stack:
    """A running API (and maybe workers) on a database of its own."""

    url: str  # the API's base URL
    database_url: str
    config: Path
    token: str | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, database_url: str, **extra: Any) -> Path:
    raw: dict[str, Any] = {
        "database": {"url": database_url, "pool_size": 4},
        "handlers": {**TEST_HANDLERS, **dict.fromkeys(OWN_TYPES, "tests.handlers:ok")},
        "timeout_milliseconds": 200,
        # One high worker runs tasks; normal and low ones stay where they are (for the tests that
        # need a task that waits: cancel, retry, list, a wait that times out).
        "priority_queues": {"high": 1, "normal": 0, "low": 0},
        **extra,
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCTASK_")}
    env.pop("DATABASE_URL", None)
    env["ASYNCTASK_LOG_LEVEL"] = "WARNING"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _start(args: list[str], config: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "asynctask.cli", "--config", str(config), *args]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=_environment(), stdout=out, stderr=out, cwd=ROOT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    health = url + "/health"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the API exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.05)
    raise AssertionError("the API did not answer /health within 30 s")


@contextlib.contextmanager
def running(
    database_url: str, directory: Path, workers: bool = True, **extra: Any
) -> Iterator[Stack]:
    """`asynctask api` on a free port (and `asynctask workers`) until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory / "config.yaml", database_url, **extra)
    port = free_port()
    log = directory / "stack.log"
    processes = [_start(["api", "--port", str(port)], config, log)]
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, processes[0], log)
        if workers:
            processes.append(_start(["workers"], config, log))
        tokens = extra.get("api", {}).get("tokens")
        yield Stack(url, database_url, config, tokens[0] if tokens else None)
    finally:
        for process in processes:
            _stop(process)
