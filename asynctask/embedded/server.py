"""Start or join a project's embedded server, and let go of it when this process exits."""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

from asynctask.core.errors import DatabaseError
from asynctask.embedded import cluster
from asynctask.embedded.binaries import installed_bin_dir, reachable_bin_dir
from asynctask.embedded.files import SET_DATABASE_URL
from asynctask.embedded.layout import Layout, root_base, root_layout, user_layout
from asynctask.embedded.lease import Lease, exclusive
from asynctask.embedded.osuser import ensure_server_user, server_user_name

log = logging.getLogger("asynctask.embedded")

_urls: dict[Path, str] = {}  # project directory -> URL, for a second call in one process
_leases: list[Lease] = []


def embedded_url(project: Path, announce: bool) -> str:
    """The URL of `project`'s server, started if needed; held by this process until it exits.

    `announce`: log the long "started an embedded PostgreSQL" warning if this call starts it.
    """
    if project in _urls:
        return _urls[project]
    bin_dir = installed_bin_dir()  # first: a missing extra creates nothing
    try:
        layout, bin_dir = _prepare(project, bin_dir)
        with exclusive(layout.lock_file):
            port, started = cluster.ensure_running(layout, bin_dir)
            lease = Lease(layout, bin_dir)
    except OSError as exc:
        raise DatabaseError(f"could not start the embedded PostgreSQL: {exc}") from exc
    atexit.unregister(release_all)  # registered once however many servers this process uses
    atexit.register(release_all)
    _leases.append(lease)
    if started and announce:
        log.warning(
            "no database.url or DATABASE_URL set: started an embedded PostgreSQL for %s with its"
            " data in %s; it stops when the last asynctask process using it exits (%s)",
            project,
            layout.pgdata,
            SET_DATABASE_URL,
        )
    else:
        log.debug("using the embedded PostgreSQL with its data in %s", layout.pgdata)
    _urls[project] = cluster.url(layout, port)
    return _urls[project]


def _prepare(project: Path, bin_dir: Path) -> tuple[Layout, Path]:
    """The cluster's directories (and, as root, its OS user and reachable binaries)."""
    if os.geteuid() != 0:
        return user_layout(project), bin_dir
    base = root_base(os.environ)
    with exclusive(base / ".lock"):
        user = ensure_server_user(server_user_name(os.environ))
        layout = root_layout(project, user, base)
        return layout, reachable_bin_dir(bin_dir, user, base)


def release_all() -> None:
    """Stop using this process's embedded servers, stopping each one nobody else uses (at exit)."""
    _urls.clear()
    while _leases:
        lease = _leases.pop()
        try:
            lease.release()
        except (OSError, DatabaseError, KeyboardInterrupt) as exc:
            # The server keeps running; the next asynctask process of the project reuses it.
            log.warning(
                "could not stop the embedded PostgreSQL in %s: %s", lease.layout.pgdata, exc
            )
