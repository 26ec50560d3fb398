"""Commands as subprocesses in tests: asynctask commands, and benchmark scripts run as black boxes.

Each runs in a session of its own, so that stopping it also ends whatever it spawned and left
behind. The suite imports nothing from bench/: a benchmark is a script with options and a JSON
result (bench/README.md), and that is all a test may rely on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_DSN
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
Process = subprocess.Popen[bytes]


def asynctask(*args: str) -> list[str]:
    """The command line that runs `asynctask ARGS` from this checkout."""
    return [sys.executable, "-m", "asynctask.cli", *args]


def env(url: str, **overrides: str) -> dict[str, str]:
    """The environment for an asynctask process: this checkout, the database, quiet logs."""
    base = {
        "DATABASE_URL": url,
        "ASYNCTASK_CONFIG": str(ROOT / "config.yaml"),
        "ASYNCTASK_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    return {**os.environ, **base, **overrides}


def start(command: list[str], url: str, **overrides: str) -> Process:
    """Start `asynctask COMMAND` against `url` in a session of its own."""
    return subprocess.Popen(asynctask(*command), env=env(url, **overrides), start_new_session=True)


def stop(process: Process, timeout: float = 30) -> int:
    """SIGTERM, wait up to `timeout` s, then SIGKILL what is left of its session; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return int(process.returncode)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    """True if GET `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_http(url: str, timeout: float = 60) -> None:
    """Wait until GET `url` answers 200."""
    wait_until(lambda: answers(url), timeout=timeout, interval=0.05)


def run_bench(name: str, *options: str, timeout: float = 600) -> dict[str, Any]:
    """Run `python -m bench.NAME OPTIONS --json FILE` on the test server; the JSON it wrote.

    Prints everything the script printed (its rendered account), whatever the outcome. Its
    scratch databases live on the tests' server (ASYNCTASK_BENCH_DSN).
    """
    with tempfile.TemporaryDirectory(prefix=f"asynctask-{name}-") as tmp:
        result, output = Path(tmp) / "result.json", Path(tmp) / "output.txt"
        command = [sys.executable, "-m", f"bench.{name}", *options, "--json", str(result)]
        with output.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "ASYNCTASK_BENCH_DSN": ADMIN_DSN},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            process.wait(timeout)
        finally:
            code = stop(process, timeout=60)  # if still running (timed out): it cleans up first
            print("\n" + output.read_text(errors="replace"))
        assert result.exists(), f"bench.{name} exited {code} and wrote no result"
        found: dict[str, Any] = json.loads(result.read_text())
    return found
