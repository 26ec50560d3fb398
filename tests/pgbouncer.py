"""A real PgBouncer for tests: Debian's `pgbouncer` on a free port, with a generated config.

One process serves one database under three names: `session` (session pooling), `tx`
(transaction pooling) and `tx1` (transaction pooling over a single server connection, so what one
client leaves on a server session is met by the next one, deterministically).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.extensions

from tests.processes import free_port

POOLS = {
    "session": "pool_mode=session",
    "tx": "pool_mode=transaction pool_size=4",
    "tx1": "pool_mode=transaction pool_size=1",
}


@dataclass
class Bouncer:
    """A running PgBouncer in front of one database."""

    port: int
    user: str

    def url(self, pool: str) -> str:
        """The URL of one of POOLS."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{pool}"


def _config(database_url: str, directory: Path, port: int) -> tuple[Path, str]:
    params = psycopg2.extensions.parse_dsn(database_url)
    user = params.get("user") or "postgres"
    server = (
        f"host={params.get('host') or '127.0.0.1'} port={params.get('port') or 5432}"
        f" dbname={params['dbname']}"
    )
    databases = "\n".join(f"{name} = {server} {mode}" for name, mode in POOLS.items())
    # trust: PgBouncer does not check the client; the auth file's password (if the URL has one)
    # is what it logs in to the server with.
    (directory / "users.txt").write_text(f'"{user}" "{params.get("password", "")}"\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n{databases}\n\n[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        "default_pool_size = 20\nmax_client_conn = 500\n"
        "logfile =\npidfile =\nlog_connections = 0\nlog_disconnections = 0\n"
    )
    return ini, user


def _command(ini: Path, directory: Path) -> list[str]:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if os.geteuid() != 0:
        return [binary, str(ini)]
    # PgBouncer refuses to run as root: drop to the postgres user (or nobody), who must read the
    # config directory.
    user = "postgres" if _user_exists("postgres") else "nobody"
    shutil.chown(directory, user)
    for path in directory.iterdir():
        shutil.chown(path, user)
    return [binary, "-u", user, str(ini)]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def pgbouncer(database_url: str) -> Iterator[Bouncer]:
    """Start PgBouncer in front of `database_url`; stop it and remove its files afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="asynctask-pgbouncer-"))
    process = None
    try:
        port = free_port()
        ini, user = _config(database_url, directory, port)
        log = directory / "pgbouncer.log"
        with log.open("wb") as stderr:  # a file, not a pipe nobody drains
            process = subprocess.Popen(_command(ini, directory), stderr=stderr)
        bouncer = Bouncer(port, user)
        _wait_ready(bouncer, process, log)
        yield bouncer
    finally:
        if process is not None:
            process.terminate()  # SIGTERM: PgBouncer's immediate shutdown
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(
    bouncer: Bouncer, process: subprocess.Popen[bytes], log: Path, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            said = log.read_text(errors="replace").strip()
            raise RuntimeError(f"pgbouncer exited with {process.returncode}: {said}")
        try:
            psycopg2.connect(bouncer.url("session"), connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
