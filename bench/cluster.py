"""A PostgreSQL cluster of the benchmark's own: initdb into a temporary directory, started with
production settings (autovacuum on), stopped and removed afterwards.

A shared development server may run with autovacuum off; a soak of a queue table measures vacuum
as much as asynctask, so it needs a server set up as production servers are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import free_port

# PostgreSQL's defaults except where a dedicated queue server would differ: autovacuum stated
# explicitly (it is the point), 256 MB of shared buffers (the machine has plenty of memory), and the
# socket in the cluster's own directory so nothing of the machine's server is touched.
SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "autovacuum": "on",
    "track_counts": "on",
    "shared_buffers": "'256MB'",
    "max_connections": "100",
    "fsync": "on",
    "synchronous_commit": "on",
    "log_autovacuum_min_duration": "0",  # the log then shows every autovacuum run
}


@dataclass(frozen=True)
class Cluster:
    """A running cluster: its directory, its port on 127.0.0.1."""

    directory: Path
    port: int

    @property
    def data(self) -> Path:
        """The data directory."""
        return self.directory / "data"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.directory / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        """A URL for one of its databases (user postgres, trust authentication)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def postmaster_pid(self) -> int:
        """The server's main process (the first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])


def pg_bin() -> Path:
    """PostgreSQL's programs: $ASYNCTASK_PG_BIN, else `pg_config --bindir`."""
    if "ASYNCTASK_PG_BIN" in os.environ:
        return Path(os.environ["ASYNCTASK_PG_BIN"])
    found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip())


def _as_owner(command: list[str], directory: Path, **kwargs: Any) -> None:
    # initdb and postgres refuse to run as root: run them as the postgres account then.
    owner: dict[str, Any] = {}
    if os.geteuid() == 0:
        owner = {"user": "postgres", "group": "postgres", "extra_groups": []}
    subprocess.run(command, cwd=directory, check=True, **owner, **kwargs)


@contextlib.contextmanager
def own_cluster(settings: Mapping[str, str] | None = None) -> Iterator[Cluster]:
    """initdb, start on a free port, yield the Cluster; stop it and remove everything after."""
    directory = Path(tempfile.mkdtemp(prefix="asynctask-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    cluster = Cluster(directory, free_port())
    bindir = pg_bin()
    started = False
    try:
        _as_owner(
            [str(bindir / "initdb"), "-D", str(cluster.data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync"],
            directory,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        lines = [f"{key} = {value}" for key, value in {**SETTINGS, **(settings or {})}.items()]
        lines += [f"port = {cluster.port}", f"unix_socket_directories = '{directory}'"]
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# bench/cluster.py\n" + "\n".join(lines) + "\n")
        started = True
        _as_owner(
            [str(bindir / "pg_ctl"), "-D", str(cluster.data), "-l", str(cluster.log), "-w",
             "-t", "60", "start"],
            directory,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        yield cluster
    finally:
        if started:
            _stop(bindir, cluster)
        shutil.rmtree(directory, ignore_errors=True)


def _stop(bindir: Path, cluster: Cluster) -> None:
    for mode in ("fast", "immediate"):
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_owner(
                [str(bindir / "pg_ctl"), "-D", str(cluster.data), "-m", mode, "-w", "-t", "30",
                 "stop"],
                cluster.directory,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            return
