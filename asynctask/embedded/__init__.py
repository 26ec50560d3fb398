"""The zero-setup database: a private embedded PostgreSQL when no database URL is configured.

A normal user's cluster lives in `<project>/.asynctask/`; root's in `/var/lib/asynctask/<project>-
<hash>/`, run by a no-login OS user of its own. Every asynctask process of a project shares one
server, started if needed and stopped when the last of them exits. Needs `asynctask[embedded]`.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
from pathlib import Path

from asynctask.core.config import Config
from asynctask.core.errors import ConfigError, DatabaseError
from asynctask.embedded import cluster
from asynctask.embedded.binaries import installed_bin_dir, reachable_bin_dir
from asynctask.embedded.files import SET_DATABASE_URL, EmbeddedRefused
from asynctask.embedded.layout import Layout, root_base, root_layout, user_layout
from asynctask.embedded.lease import Lease, exclusive
from asynctask.embedded.osuser import ensure_server_user, server_user_name

__all__ = ["REQUIRE_URL_ENV", "EmbeddedRefused", "release_all", "with_database"]

log = logging.getLogger("asynctask.embedded")

# Set in the container image: there, a missing URL is a mistake, not a wish for a private database.
REQUIRE_URL_ENV = "ASYNCTASK_REQUIRE_DATABASE_URL"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

_urls: dict[Path, str] = {}  # project directory -> URL, for a second call in one process
_leases: list[Lease] = []


def with_database(config: Config, *, announce: bool = True) -> Config:
    """The config unchanged if it names a database; else one pointing at the embedded server.

    `announce`: log the "using an embedded PostgreSQL" warning if this call starts the server.
    """
    if config.database.url:
        return config
    if _url_required():
        raise EmbeddedRefused(
            f"DATABASE_URL is not set (nor database.url), and {REQUIRE_URL_ENV} says one is"
            f" required here (as in the container image): {SET_DATABASE_URL}"
        )
    project = Path.cwd()
    url = _urls.get(project) or _start(project, announce)
    _urls[project] = url
    return dataclasses.replace(config, database=dataclasses.replace(config.database, url=url))


def _url_required() -> bool:
    value = os.environ.get(REQUIRE_URL_ENV, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigError(f"{REQUIRE_URL_ENV}: {value!r} is not allowed (1 or 0)")
    return value in _TRUE


def _start(project: Path, announce: bool) -> str:
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
    return cluster.url(layout, port)


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
