"""Scratch set-ups for the embedded PostgreSQL tests, which run real commands as root.

Each Scratch has its own base directory (ASYNCTASK_EMBEDDED_ROOT_DIR) and its own server user
(ASYNCTASK_EMBEDDED_USER), so parallel test runs on one machine never share a cluster or a user.
close() stops every server and process it started, deletes the users it created, then its files.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

from asynctask.embedded.layout import project_dir_name
from tests.conftest import TEST_HANDLERS
from tests.waiting import wait_until

REPOSITORY = Path(__file__).resolve().parent.parent
WARNING = "started an embedded PostgreSQL"


class Scratch:
    """A private base directory, a unique server user name, and cleanup of everything made."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="asynctask-embedded-", dir="/tmp"))
        os.chmod(self.root, 0o755)  # the server user traverses it to its cluster
        self.base = self.root / "lib"
        self.server_user = f"atpg-{uuid.uuid4().hex[:10]}"
        self.users = [self.server_user]
        self.processes: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment without any database or asynctask setting, plus ours."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ASYNCTASK_", "PG", "COV_CORE")) and key != "DATABASE_URL"
        }
        env["ASYNCTASK_EMBEDDED_ROOT_DIR"] = str(self.base)
        env["ASYNCTASK_EMBEDDED_USER"] = self.server_user
        env["PYTHONPATH"] = str(REPOSITORY)  # `tests.handlers` for the test config
        return {**env, **extra}

    def project(self, *parts: str, mode: int = 0o700) -> Path:
        """A project directory (each part created with `mode`) holding a config.yaml."""
        path = self.root
        for part in parts:
            path = path / part
            path.mkdir()
            os.chmod(path, mode)
        (path / "config.yaml").write_text(yaml.safe_dump({"handlers": TEST_HANDLERS}))
        return path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "asynctask.cli", *args]

    def run(self, project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`asynctask ARGS` in `project`, to completion."""
        return subprocess.run(
            self.command(*args),
            cwd=project,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def start(self, project: Path, *args: str) -> subprocess.Popen[str]:
        """`asynctask ARGS` in `project`, in the background (stopped by close() at the latest)."""
        process = subprocess.Popen(
            self.command(*args),
            cwd=project,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.processes.append(process)
        return process

    def cluster(self, project: Path) -> Path:
        """Root's state directory for `project` (its pgdata is below it)."""
        return self.base / project_dir_name(project)

    def add_user(self) -> str:
        """A throwaway local user (no home, no login shell), deleted by close()."""
        name = f"atuser-{uuid.uuid4().hex[:10]}"
        options = ["--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
        subprocess.run(["useradd", *options, "--user-group", name], check=True, capture_output=True)
        self.users.append(name)
        return name

    def close(self) -> None:
        for process in self.processes:
            stop(process)
        for pgdata in self.base.glob("*/pgdata"):
            pid = postmaster_pid(pgdata)
            if pid is not None:  # fast shutdown, as pg_ctl stop -m fast would
                os.kill(pid, signal.SIGINT)
                wait_until(lambda pgdata=pgdata: postmaster_pid(pgdata) is None)
        for name in self.users:
            with contextlib.suppress(KeyError):
                kill_processes_of(pwd.getpwnam(name).pw_uid)
                subprocess.run(["userdel", name], check=False, capture_output=True)
                subprocess.run(["groupdel", name], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid in postmaster.pid, if the file exists and that process is alive."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
        return pid
    return None


def stop(process: subprocess.Popen[str], timeout: float = 30) -> int:
    """SIGTERM (a requested stop), then SIGKILL if it does not end in time; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def kill_processes_of(uid: int) -> None:
    """SIGKILL each process left running as `uid` (a user this test created), by pid."""
    for pid in processes_of(uid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not processes_of(uid), timeout=10)


def processes_of(uid: int) -> list[int]:
    """The pids of the live processes whose real uid is `uid`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            line = next(x for x in status.read_text().splitlines() if x.startswith("Uid:"))
            if int(line.split()[1]) == uid:
                found.append(int(status.parent.name))
    return found


def warnings_in(text: str) -> list[str]:
    """The lines announcing that a server was started."""
    return [line for line in text.splitlines() if WARNING in line]
