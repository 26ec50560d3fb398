"""Small file helpers for the embedded server: private writes, safe reads, the refusal error."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from asynctask.core.errors import ConfigError

SET_DATABASE_URL = (
    "set DATABASE_URL=postgresql://user:password@host:5432/dbname to use a real server"
)


class EmbeddedRefused(ConfigError):
    """The embedded server cannot be used safely here; the message says why and what to do."""


def write_file(path: Path, text: str, *, group: int | None = None) -> None:
    """Write atomically: 0600 for the owner, or 0640 root:`group` when a server user reads it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        if group is not None:
            os.fchown(fd, 0, group)
            os.fchmod(fd, 0o640)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_text(path: Path, limit: int = 65536, *, last: bool = False) -> str | None:
    """Up to `limit` bytes (the last ones if `last`) of a regular file; None if it is missing.

    Never follows a symlink or blocks on a FIFO: root reads files in the server user's data
    directory, which that user could replace.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if last and info.st_size > limit:
            os.lseek(fd, info.st_size - limit, os.SEEK_SET)
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file joined by ' | ', for a one-line error message."""
    text = read_text(path, last=True) or ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())
