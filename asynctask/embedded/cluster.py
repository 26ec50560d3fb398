"""One embedded cluster's life: initdb, its password, asynctask's config files, start and stop.

The server listens on 127.0.0.1 only, on a free port chosen at each start, with no unix socket;
its only login is `postgres` with scram-sha-256 and a generated password kept in a 0600 file
that only the owning user (or root) can read. The config and pg_hba files live outside the data
directory, so the server's user cannot loosen them.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from asynctask.core.errors import DatabaseError
from asynctask.embedded.files import SET_DATABASE_URL, EmbeddedRefused, read_text, tail, write_file
from asynctask.embedded.layout import Layout

log = logging.getLogger("asynctask.embedded")

SUPERUSER = "postgres"
DATABASE = "postgres"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Running:
    """A live postmaster, read from its postmaster.pid."""

    pid: int
    port: int


def ensure_running(layout: Layout, bin_dir: Path) -> tuple[int, bool]:
    """The server's port, and whether this call started it (initialising the cluster first)."""
    current = running(layout)
    if current is not None:
        return current.port, False
    if not (layout.pgdata / "PG_VERSION").exists():
        _initdb(layout, bin_dir)
    if password(layout) is None:
        # A new cluster, or one made by an older asynctask with trust authentication.
        _set_password(layout, bin_dir)
    _start(layout, bin_dir)
    current = running(layout)
    if current is None:
        raise DatabaseError(f"the embedded PostgreSQL in {layout.pgdata} stopped right after start")
    return current.port, True


def stop(layout: Layout, bin_dir: Path) -> None:
    """Stop the server (fast: open sessions are ended); a warning if it does not stop."""
    done = _run(layout, bin_dir, "pg_ctl", "stop", "-D", str(layout.pgdata), "-m", "fast", "-w")
    if done.returncode != 0 and running(layout) is not None:
        log.warning("could not stop the embedded PostgreSQL in %s: %s", layout.pgdata, _why(done))


def running(layout: Layout) -> Running | None:
    """The server if its postmaster.pid names a live, ready process; refused if not ours."""
    lines = (read_text(layout.pgdata / "postmaster.pid") or "").splitlines()
    if len(lines) < 8 or not lines[0].strip().isdigit() or not _alive(int(lines[0])):
        return None
    pid, port, sockets, address, status = lines[0], lines[3], lines[4], lines[5], lines[7]
    if sockets.strip() or address.strip() != HOST:
        raise EmbeddedRefused(
            f"a PostgreSQL not started by this asynctask runs on {layout.pgdata} (process {pid},"
            f" listening on {address.strip() or 'no address'}, sockets in {sockets.strip() or '-'}"
            f"); stop it (pg_ctl -D {layout.pgdata} stop -m fast) and start again, or"
            f" {SET_DATABASE_URL}"
        )
    if status.strip() != "ready":
        raise DatabaseError(f"the embedded PostgreSQL in {layout.pgdata} is {status.strip()}")
    return Running(int(pid), int(port))


def password(layout: Layout) -> str | None:
    """The superuser's password from its 0600 file, None before it is set."""
    text = (read_text(layout.password_file) or "").strip()
    return text or None


def url(layout: Layout, port: int) -> str:
    """The connection URL (its password is urlsafe, so it needs no quoting)."""
    return f"postgresql://{SUPERUSER}:{password(layout)}@{HOST}:{port}/{DATABASE}"


# initdb's own pg_hba.conf is never used (asynctask passes its own), but if someone starts the
# cluster by hand it must not be trust either: peer on a socket, nothing over TCP.
_INITDB_ARGS = (
    *("--username", SUPERUSER, "--auth-local=peer", "--auth-host=reject"),
    *("--encoding=UTF8", "--no-locale", "--no-instructions"),
)


def _initdb(layout: Layout, bin_dir: Path) -> None:
    done = _run(layout, bin_dir, "initdb", *_INITDB_ARGS, "-D", str(layout.pgdata))
    if done.returncode != 0:
        raise DatabaseError(f"initdb failed in {layout.pgdata}: {_why(done)}")


def _set_password(layout: Layout, bin_dir: Path) -> None:
    """Set a new random password in single-user mode (no connection, no auth), then store it."""
    secret = secrets.token_urlsafe(32)
    statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{secret}'\n"
    single = ("--single", "-D", str(layout.pgdata), DATABASE)
    done = _run(layout, bin_dir, "postgres", *single, stdin=statement)
    if done.returncode != 0 or "ERROR:" in done.stderr:
        why = _why(done).replace(secret, "***")  # an error repeats the statement
        raise DatabaseError(f"could not set the password of {layout.pgdata}: {why}")
    write_file(layout.password_file, secret + "\n")


def _start(layout: Layout, bin_dir: Path) -> None:
    """pg_ctl start on the previous port if it is free, else on a new one (up to 3 tries)."""
    option = f"-c config_file={shlex.quote(str(layout.config_file))}"
    # The same port as last time when possible: a process that outlived a crashed server keeps
    # a working URL once another asynctask command has started the server again.
    ports = [_free_port(_previous_port(layout)), _free_port(), _free_port()]
    for port in ports:
        _write_config(layout, port)
        start = ("start", "-D", str(layout.pgdata), "-w", "-t", "60", "-l", str(layout.log_file))
        done = _run(layout, bin_dir, "pg_ctl", *start, "-o", option)
        if done.returncode == 0:
            return
        said = tail(layout.log_file, 8)
        if "could not bind" not in said and "TCP/IP socket" not in said:
            break
    raise DatabaseError(
        f"could not start the embedded PostgreSQL in {layout.pgdata}: {tail(layout.log_file)}"
        f" (log: {layout.log_file})"
    )


def _write_config(layout: Layout, port: int) -> None:
    def quoted(path: Path) -> str:
        return "'" + str(path).replace("'", "''") + "'"

    settings = [
        "# Written by asynctask at every start of its embedded PostgreSQL; edits are lost.",
        "# initdb's settings first; asynctask's below override them.",
        f"include_if_exists = {quoted(layout.pgdata / 'postgresql.conf')}",
        f"listen_addresses = '{HOST}'",
        f"port = {port}",
        "unix_socket_directories = ''",
        f"hba_file = {quoted(layout.hba_file)}",
        "password_encryption = 'scram-sha-256'",
    ]
    hba = [
        "# Written by asynctask: one role, over TCP from 127.0.0.1, with the generated password.",
        f"host all {SUPERUSER} {HOST}/32 scram-sha-256",
    ]
    write_file(layout.hba_file, "\n".join(hba) + "\n", group=layout.reader_group)
    write_file(layout.config_file, "\n".join(settings) + "\n", group=layout.reader_group)


def _run(
    layout: Layout, bin_dir: Path, program: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of the wheel's programs as the server's user, with a minimal environment."""
    environment = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    if "TZ" in os.environ:
        environment["TZ"] = os.environ["TZ"]
    as_user = layout.user.subprocess_kwargs() if layout.user else {}
    try:
        return subprocess.run(  # noqa: S603 (a fixed program of the wheel, arguments as a list)
            [str(bin_dir / program), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=layout.state_dir,
            env=environment,
            umask=0o077,
            timeout=120,
            check=False,
            **as_user,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatabaseError(f"embedded PostgreSQL: {program} failed: {exc}") from exc


def _why(done: subprocess.CompletedProcess[str]) -> str:
    """A failed program's last words on one line: its stderr (where errors go), else stdout."""
    text = done.stderr if done.stderr.strip() else done.stdout
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:]) or f"exit status {done.returncode}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _previous_port(layout: Layout) -> int:
    for line in (read_text(layout.config_file) or "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "port" and value.strip().isdigit():
            return int(value)
    return 0


def _free_port(wanted: int = 0) -> int:
    """`wanted` if it can be bound now (as postgres binds: SO_REUSEADDR), else any free port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, wanted))
        except OSError:
            probe.bind((HOST, 0))
        return int(probe.getsockname()[1])
