"""Shared pieces of the benchmarks: scratch databases, asynctask processes, CPU accounting."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import psycopg2.extensions

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get("ASYNCTASK_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: --json to write the result."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    return parser


def report(name: str, result: dict[str, Any], json_path: Path | None) -> None:
    """Print the one summary line and optionally write the JSON result."""
    summary = " ".join(
        f"{k}={_fmt(v)}" for k, v in result.items() if not isinstance(v, list | dict)
    )
    print(f"{name}: {summary}", flush=True)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"benchmark": name, **result}, indent=2) + "\n")


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def admin() -> psycopg2.extensions.connection:
    """An autocommit connection to the server's maintenance database."""
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A new empty database (asynctask migrate creates the schema), dropped afterwards."""
    name = f"asynctask_bench_{uuid.uuid4().hex[:10]}"
    conn = admin()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    url = psycopg2.extensions.make_dsn(ADMIN_DSN, dbname=name)
    try:
        subprocess.run([*asynctask(), "migrate"], env=env(url), check=True)
        yield url
    finally:
        # A new session: one held through the run would not survive a server restart (chaos.py).
        conn = admin()
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


def asynctask() -> list[str]:
    """The command line that runs asynctask from this checkout."""
    return [sys.executable, "-m", "asynctask.cli"]


def env(url: str, **overrides: str) -> dict[str, str]:
    """The environment for an asynctask process: this checkout, the database, quiet logs."""
    result = dict(os.environ)
    result.update(
        {
            "DATABASE_URL": url,
            "ASYNCTASK_CONFIG": str(ROOT / "config.yaml"),
            "ASYNCTASK_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    result.update(overrides)
    return result


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A running asynctask command and everything it spawned."""

    process: subprocess.Popen[bytes]
    children: list[psutil.Process] = field(default_factory=list)

    def tree(self) -> list[psutil.Process]:
        """The process and its live descendants."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                for proc in self.tree():
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
                self.process.wait()
        return int(self.process.returncode)


def start(command: list[str], url: str, **overrides: str) -> Service:
    """Start `asynctask <command>` against `url`."""
    process = subprocess.Popen([*asynctask(), *command], env=env(url, **overrides))
    return Service(process)


def wait_http(url: str, timeout: float = 60) -> None:
    """Wait until GET url answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of these processes (0 for any that vanished)."""
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def postgres_processes() -> list[psutil.Process]:
    """Every PostgreSQL server process on this machine (the benchmark's database server)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            found.append(proc)
    return found


def postgres_cpu_seconds() -> float:
    """CPU seconds of the whole PostgreSQL server so far, backends that already exited included.

    A difference of two readings is the server's CPU in between, whoever connected: a live
    process counts its own, and an exited backend's was added to the postmaster's children's.
    """
    total = 0.0
    processes = postgres_processes()
    pids = {proc.pid for proc in processes}
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
            if proc.ppid() not in pids:  # a postmaster: it reaps the backends
                total += times.children_user + times.children_system
    return total


def commits(url: str) -> int:
    """Transactions committed in this database so far (a backend reports its own when it exits).

    Read it before a drain and again after every client has disconnected: the difference per
    task shows how many statements' commits (each a WAL flush when synchronous) a task cost.
    """
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_force_next_flush()")
            cur.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


# Is any task still due or running? Each side walks its partial index in order, as a claim does,
# so a poll reads a few index pages. (A plain `state IN (...) OR state = 'running'` scanned the
# heap: ~0.2 s per poll on a million rows, five times a second, which the drain paid for.)
UNFINISHED_SQL = (
    "SELECT EXISTS (SELECT 1 FROM tasks WHERE state IN ('available', 'retrying')"
    " ORDER BY priority, scheduled_at, id LIMIT 1)"
    " OR EXISTS (SELECT 1 FROM tasks WHERE state = 'running' ORDER BY lease_expires_at LIMIT 1)"
)


def drain_result(
    cur: psycopg2.extensions.cursor, rows: int, elapsed: float, **cpu_seconds: float
) -> dict[str, Any]:
    """A drain's summary: its tasks by state, the completed ones per second, the CPU given."""
    cur.execute("SELECT state, count(*) FROM tasks GROUP BY state")
    states = dict(cur.fetchall())
    completed = int(states.get("completed", 0))
    return {
        "rows": rows,
        "completed": completed,
        "elapsed_s": round(elapsed, 2),
        "tasks_per_s": round(completed / elapsed),
        **{name: round(value, 1) for name, value in cpu_seconds.items()},
        "states": states,
    }


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def spread(ms: list[float]) -> dict[str, float]:
    """How many, and the p50 / p90 / p99 / max of latencies in milliseconds."""
    return {
        "tasks": len(ms),
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p90_ms": round(percentile(ms, 0.90), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
    }


def median(values: list[float]) -> float:
    """The median, for summaries of repeated runs."""
    return float(statistics.median(values))


def connect(url: str, patience: float = 60.0) -> psycopg2.extensions.connection:
    """An autocommit connection, waiting out a server restart."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn = psycopg2.connect(url, connect_timeout=5)
            conn.autocommit = True
            return conn
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def rows(url: str, sql: str, params: Any = None) -> list[list[Any]]:
    """Rows from a fresh connection (the harness's own sessions die with the server)."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return [list(row) for row in cur.fetchall()]
    finally:
        conn.close()


def scalar(url: str, sql: str, params: Any = None) -> Any:
    """One value from a fresh connection."""
    found = rows(url, sql, params)
    return found[0][0] if found else None


def wait_for(check: Callable[[], bool], timeout: float) -> None:
    """Poll `check` every 0.25 s until it is true; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout:.0f} s")
        time.sleep(0.25)
