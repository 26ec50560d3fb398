"""One application host: `asynctask run` (API + workers) in its own network namespace and hostname.

Each host gets its own UTS namespace (`unshare --uts`) and hostname, as separate machines have:
workers name their claims `<hostname>:<pid>:<slot>`, and a fresh supervisor releases only the
dead processes of its own host. Every line the host logs is stamped with the harness's clock as
it arrives, so the account can tell when a fault was noticed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import psutil

from bench.chaos_handlers import RECORD_FILE_ENV
from bench.common import asynctask, env

API_PORT = 4000


class LogTap:
    """Collects a process's output lines with their arrival time (wall clock)."""

    def __init__(self, stream: IO[bytes], path: Path) -> None:
        self.lines: list[tuple[float, str]] = []
        self.path = path
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with self.path.open("w") as copy:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append((time.time(), line))
                copy.write(f"{time.time():.3f} {line}\n")
                copy.flush()

    def matching(self, pattern: str, after: float = 0.0) -> list[tuple[float, re.Match[str]]]:
        """(time, match) of every line from `after` on that matches `pattern`."""
        regex = re.compile(pattern)
        found = []
        for at, line in list(self.lines):
            if at >= after and (match := regex.search(line)):
                found.append((at, match))
        return found

    def first(self, pattern: str, after: float = 0.0) -> float | None:
        """When the first line from `after` on matching `pattern` arrived, or None."""
        found = self.matching(pattern, after)
        return found[0][0] if found else None


class AppHost:
    """`asynctask run` in a namespace; `kill` SIGKILLs every process of the host at once."""

    def __init__(
        self, name: str, address: str, prefix: list[str], url: str, config: Path, work: Path
    ) -> None:
        self.name = name
        self.address = address
        self.prefix = prefix
        self.url = url
        self.config = config
        self.record_file = work / f"executions-{name}.tsv"
        self.log_path = work / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.tap: LogTap | None = None

    @property
    def base(self) -> str:
        """The API's base URL."""
        return f"http://{self.address}:{API_PORT}"

    def start(self) -> None:
        """Start `asynctask run` on the host's address, under the host's own hostname."""
        run = [*asynctask(), "run", "--host", self.address, "--port", str(API_PORT)]
        named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *run]
        variables = {
            "ASYNCTASK_CONFIG": str(self.config),
            "ASYNCTASK_LOG_LEVEL": "INFO",
            # A public address, but on the harness's own private network, which nothing else
            # reaches: no tokens needed (asynctask refuses a non-loopback listener without them).
            "ASYNCTASK_API_ALLOW_ANONYMOUS": "true",
            RECORD_FILE_ENV: str(self.record_file),
        }
        self.process = subprocess.Popen(
            [*self.prefix, *named],
            env=env(self.url, **variables),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self.tap = LogTap(self.process.stdout, self.log_path)

    def processes(self) -> list[psutil.Process]:
        """The host's live processes (the run process and all it spawned)."""
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL every process of the host, as a power cut would."""
        if self.process is None:
            return
        procs = self.processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for proc in procs:  # anything that left the process group
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.process.wait()
        psutil.wait_procs(procs, timeout=10)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a clean shutdown), then `kill` whatever is left."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()
