"""A PostgreSQL cluster of a benchmark's own, with a production server's settings (autovacuum on).

initdb into a temporary directory, then `postgres` in the foreground, optionally inside a network
namespace and listening on its address there. The shared server of this machine runs with
autovacuum off, which no production server does; fault and soak runs need their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg2

from bench.common import free_port

SETTINGS = {
    "autovacuum": "on",
    "max_connections": "300",  # three hosts, their API pools, and sessions a partition orphans
    "shared_buffers": "128MB",
    "fsync": "on",
    "synchronous_commit": "on",
}


def server_binaries() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin, or $ASYNCTASK_PG_BIN."""
    if "ASYNCTASK_PG_BIN" in os.environ:
        return Path(os.environ["ASYNCTASK_PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3])
    )
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


class Cluster:
    """One server: `start` it, take `url`s, `stop` it (also after a partial start)."""

    def __init__(
        self,
        directory: Path,
        host: str,
        clients: str,
        prefix: list[str] | None = None,
        port: int = 5432,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory  # created, and removed, by the caller; its parents searchable
        self.host = host
        self.clients = clients  # the network allowed in, e.g. 10.213.7.0/24 (trust auth)
        self.prefix = prefix or []  # e.g. ["ip", "netns", "exec", NAME]
        self.port = port
        self.settings = {**SETTINGS, **(settings or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        """A URL of one of its databases."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _as_postgres(self) -> list[str]:
        # initdb and postgres refuse to run as root.
        if os.geteuid() != 0:
            return []
        shutil.chown(self.directory, "postgres", "postgres")
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]

    def start(self, timeout: float = 60) -> None:
        """initdb, allow the clients' network, start the server and wait until it answers."""
        data = self.directory / "data"
        drop = self._as_postgres()
        initdb = [str(server_binaries() / "initdb"), "-D", str(data), "-U", "postgres"]
        done = subprocess.run(
            [*drop, *initdb, "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.clients} trust\n")
        settings = {
            **self.settings,
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
        }
        options = [item for key, value in settings.items() for item in ("-c", f"{key}={value}")]
        with (self.directory / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *self.prefix,
                    *drop,
                    str(server_binaries() / "postgres"),
                    "-D",
                    str(data),
                    *options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                said = (self.directory / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {said}")
            try:
                psycopg2.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def postmaster_pid(self) -> int:
        """The server's main process."""
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """Fast shutdown (SIGINT); SIGKILL to its whole process group if it does not exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def own_cluster(settings: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    """A cluster on 127.0.0.1 and a free port in a temporary directory, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="asynctask-pg-"))
    directory.chmod(0o755)  # the postgres account must reach its data directory inside
    cluster = Cluster(directory, "127.0.0.1", "127.0.0.1/32", port=free_port(), settings=settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
