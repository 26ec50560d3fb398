"""The chaos run's processes and the faults it injects: worker and supervisor kills, a restart."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import psycopg2
import psycopg2.extensions

from bench.chaos_account import DB_RESTART, SUPERVISOR_KILL, SUPERVISOR_RESTART, WORKER_KILL, Event
from bench.chaos_handlers import RECORD_DSN_ENV
from bench.common import Service, free_port, rows, scalar, start, wait_for


def db_restart_command(url: str) -> tuple[list[str] | None, str]:
    """The command that restarts the server behind `url`, or None and why it cannot be used."""
    if os.geteuid() != 0:
        return None, "skipped: not root, so the server cannot be restarted from here"
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        return None, "skipped: no pg_ctlcluster on this machine"
    params = psycopg2.extensions.parse_dsn(url)
    host = params.get("host") or "localhost"
    if host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("/"):
        return None, f"skipped: the server ({host}) is not on this machine"
    port = params.get("port") or "5432"
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    ).stdout
    for line in listing.splitlines():
        version, cluster, cluster_port, status, *_ = [*line.split(), "", "", "", ""]
        if cluster_port == str(port) and status.startswith("online"):
            command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"]
            return command, f"{version}/{cluster} restarted with pg_ctlcluster"
    return None, f"skipped: no online local cluster listens on port {port}"


def workers_of(supervisor: Service) -> dict[int, str]:
    """pid → slot name of the supervisor's live worker processes."""
    found = {}
    for proc in supervisor.tree()[1:]:
        try:
            # setproctitle pads the command line with empty arguments.
            words = " ".join(proc.cmdline()).split()
            if words[:2] == ["asynctask", "worker"] and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = words[2]
        except psutil.Error:
            continue
    return found


def wait_gone(pids: list[int], timeout: float) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(procs, timeout=timeout)


class Chaos:
    """One run: the processes, the fault schedule, and the events it injected."""

    def __init__(self, url: str, config_path: Path, lease_seconds: float) -> None:
        self.url = url
        self.env = {"ASYNCTASK_CONFIG": str(config_path), RECORD_DSN_ENV: url}
        self.lease_seconds = lease_seconds
        self.workers_expected: dict[str, int] = json.loads(config_path.read_text())[
            "priority_queues"
        ]
        self.port = free_port()
        self.api = start(["api", "--port", str(self.port)], url, **self.env)
        self.supervisor = start(["workers"], url, **self.env)
        self.events: list[Event] = []
        self.orphans: list[int] = []
        self.host = os.uname().nodename

    def kill_worker(self, rng: random.Random) -> None:
        """SIGKILL one random worker; count the started, unrecorded tasks it held."""
        # Right after a supervisor restart its workers may not be up yet.
        deadline = time.monotonic() + 10
        while not (workers := workers_of(self.supervisor)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not workers:
            return
        pid = rng.choice(sorted(workers))
        at = time.time()
        psutil.Process(pid).kill()
        wait_gone([pid], 5)
        # What it held, read at once: a sibling's start-up sweep or the replacement releases it
        # soon. Which of these it had started is decided at the end, from the execution records.
        held = rows(
            self.url,
            "SELECT id, attempts FROM tasks WHERE state = 'running' AND locked_by = %s",
            (f"{self.host}:{pid}:{workers[pid]}",),
        )
        self.events.append(Event(WORKER_KILL, at, pids=[pid], held=held, note=workers[pid]))

    def kill_supervisor(self, pause: float) -> None:
        """SIGKILL the supervisor alone (its workers notice and stop), then start a new one."""
        # One fault at a time: a worker killed just before would lose its release (the running
        # task, unwritten completions) with the supervisor that was about to hand it over, and
        # the account could not tell the two faults' duplicates apart.
        slots = sum(self.workers_expected.values())
        wait_for(lambda: listening(self.url) >= slots, 30)
        time.sleep(0.3)  # and past its start-up release
        orphans = list(workers_of(self.supervisor))
        at = time.time()
        self.supervisor.process.kill()
        self.supervisor.process.wait()
        self.events.append(Event(SUPERVISOR_KILL, at, pids=orphans))
        self.orphans += orphans
        time.sleep(pause)
        self.supervisor = start(["workers"], self.url, **self.env)
        self.events.append(Event(SUPERVISOR_RESTART, time.time()))
        # Let the new generation start up (and sweep) before the next kill: a worker killed in
        # the middle of its siblings' start-up sweep is released by the sweep, not by its
        # replacement (a known race, see "Known limits" in bench/README.md).
        wait_gone(orphans, 30)
        wait_for(lambda: listening(self.url) >= len(orphans), 30)

    def restart_database(self, command: list[str]) -> None:
        """Restart PostgreSQL: every session of every client is cut."""
        at = time.time()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        note = "ok" if result.returncode == 0 else f"failed: {result.stderr.strip()}"
        self.events.append(Event(DB_RESTART, at, until=time.time(), note=note))

    def pending(self) -> int:
        """Tasks not finished yet."""
        return int(
            scalar(
                self.url,
                "SELECT count(*) FROM tasks WHERE state IN ('available', 'retrying', 'running')",
            )
        )

    def stop(self) -> None:
        """SIGTERM the API and the supervisor; wait for the orphans of a killed supervisor."""
        self.supervisor.stop()
        self.api.stop()
        wait_gone(self.orphans, 30)


def listening(url: str) -> int:
    """Worker connections open (each LISTENs, then looks for work, as soon as it is open)."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'asynctask worker %%'"
    )
    return int(scalar(url, sql))
