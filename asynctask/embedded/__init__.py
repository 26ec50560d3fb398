"""The zero-setup database: a private embedded PostgreSQL when no database URL is configured.

A normal user's cluster lives in `<project>/.asynctask/`; root's in `/var/lib/asynctask/<project>-
<hash>/`, run by a no-login OS user of its own. Every asynctask process of a project shares one
server, started if needed and stopped when the last of them exits. Needs `asynctask[embedded]`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from asynctask.core.config import Config
from asynctask.core.errors import ConfigError
from asynctask.embedded.files import SET_DATABASE_URL, EmbeddedRefused

__all__ = ["REQUIRE_URL_ENV", "EmbeddedRefused", "with_database"]

# Set in the container image: there, a missing URL is a mistake, not a wish for a private database.
REQUIRE_URL_ENV = "ASYNCTASK_REQUIRE_DATABASE_URL"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


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
    # Imported here: the server's modules are POSIX-only (flock, users, groups), and a command
    # given a URL needs none of them.
    from asynctask.embedded.server import embedded_url

    url = embedded_url(Path.cwd(), announce)
    return dataclasses.replace(config, database=dataclasses.replace(config.database, url=url))


def _url_required() -> bool:
    raw = os.environ.get(REQUIRE_URL_ENV, "")
    value = raw.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigError(f"{REQUIRE_URL_ENV}: {raw!r} is not allowed (1 or 0)")
    return value in _TRUE
