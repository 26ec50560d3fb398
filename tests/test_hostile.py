"""Hostile input and hostile neighbours: each attack is a test named after what it tries.

The embedded server: a second local user on the same machine (created here, removed after) must
not reach the database of a project run by root, by unix socket or by TCP.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from tests.embedded_scratch import Scratch, postmaster_pid, wait_until

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="creates local users (CI runs as root)")


@dataclass(frozen=True)
class EmbeddedServer:
    """A root-run project's embedded server, kept up by `asynctask api`."""

    state: Path
    port: int
    scratch: Scratch


@pytest.fixture(scope="module")
def embedded_server() -> Iterator[EmbeddedServer]:
    scratch = Scratch()
    try:
        project = scratch.project("project")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            api_port = probe.getsockname()[1]
        api = scratch.start(project, "api", "--port", str(api_port))
        wait_until(lambda: _answers(api_port) or api.poll() is not None)
        state = scratch.cluster(project)
        assert postmaster_pid(state / "pgdata") is not None, "asynctask api did not start it"
        port = int((state / "pgdata" / "postmaster.pid").read_text().splitlines()[3])
        yield EmbeddedServer(state, port, scratch)
    finally:
        scratch.close()


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
            return True
    except OSError:
        return False


def _as(user: str, *command: str) -> subprocess.CompletedProcess[str]:
    """`command` as `user`: its own uid and group only, an empty environment, no password file."""
    entry = pwd.getpwnam(user)
    switch = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    return subprocess.run(
        [*switch, "env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


def _psql(user: str, host: str | Path, port: int, role: str, password: str | None = None) -> str:
    """psql as `user`; returns its error (or '' if it got in, which the tests forbid)."""
    secret = [f"PGPASSWORD={password}"] if password else []
    where = ["-h", str(host), "-p", str(port), "-U", role, "-d", "postgres"]
    done = _as(user, "env", *secret, "psql", "-X", "-w", *where, "-Atc", "SELECT 1")
    return "" if done.returncode == 0 else done.stderr.strip()


@root_only
def test_second_local_user_cannot_connect_to_the_embedded_server(
    embedded_server: EmbeddedServer,
) -> None:
    server, port = embedded_server, embedded_server.port
    intruder = server.scratch.add_user()
    # TCP: the only entry is `postgres` with its scram password; nothing is trusted.
    assert "no password supplied" in _psql(intruder, "127.0.0.1", port, "postgres")
    assert "password authentication failed" in _psql(
        intruder, "127.0.0.1", port, "postgres", "postgres"
    )
    assert "no pg_hba.conf entry" in _psql(intruder, "127.0.0.1", port, intruder)
    # Unix socket: the server has none, neither in the usual places nor anywhere else.
    assert f".s.PGSQL.{port}" not in Path("/proc/net/unix").read_text()
    for directory in ("/tmp", "/var/run/postgresql", server.state, server.state / "pgdata"):
        refused = _psql(intruder, directory, port, "postgres")
        assert "No such file or directory" in refused or "Permission denied" in refused
    # The password and the data are out of reach.
    assert _as(intruder, "cat", str(server.state / "password")).returncode != 0
    assert _as(intruder, "ls", str(server.state / "pgdata")).returncode != 0
    assert _as(intruder, "ls", str(server.state)).returncode != 0
    # The owner (root, with the password) gets in: the refusals above are the server's answer.
    password = (server.state / "password").read_text().strip()
    conn = psycopg2.connect(
        host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres"
    )
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == ("postgres",)
    conn.close()
