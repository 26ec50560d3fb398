"""Where a project's embedded cluster lives, in directories asynctask creates itself.

A normal user: `<project>/.asynctask/` (0700 when created). Root: `/var/lib/asynctask/<name>-
<hash>/` (or $ASYNCTASK_EMBEDDED_ROOT_DIR), one per project directory, so that no directory of the
project has to be opened to the server's user. Existing directories are checked, never chmod-ed.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from asynctask.embedded.files import SET_DATABASE_URL, EmbeddedRefused, read_text, write_file
from asynctask.embedded.osuser import ServerUser

ROOT_DIR_ENV = "ASYNCTASK_EMBEDDED_ROOT_DIR"
DEFAULT_ROOT_DIR = Path("/var/lib/asynctask")
# pg_ctl puts the data directory in double quotes inside a shell command line.
_SHELL_UNSAFE = re.compile(r'["$`\\\n]')


@dataclass(frozen=True)
class Layout:
    """A cluster's files: asynctask's own in `state_dir`, the server's in `pgdata` below it."""

    state_dir: Path
    user: ServerUser | None  # None: the server runs as the calling user

    @property
    def pgdata(self) -> Path:
        return self.state_dir / "pgdata"

    @property
    def password_file(self) -> Path:
        return self.state_dir / "password"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "postgresql.conf"

    @property
    def hba_file(self) -> Path:
        return self.state_dir / "pg_hba.conf"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "lock"

    @property
    def users_file(self) -> Path:
        return self.state_dir / "users"

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    @property
    def reader_group(self) -> int | None:
        """The group that reads asynctask's config files (the server user's), None if the owner."""
        return None if self.user is None else self.user.gid


def user_layout(project: Path) -> Layout:
    """`<project>/.asynctask`, created 0700 if missing, for a server run as the calling user."""
    layout = Layout(project / ".asynctask", None)
    _check_chars(layout.state_dir)
    try:
        _make_dir(layout.state_dir, 0o700)
        _make_dir(layout.pgdata, 0o700)
    except OSError as exc:
        raise EmbeddedRefused(
            f"cannot create {exc.filename}: {exc.strerror}; {SET_DATABASE_URL}"
        ) from exc
    for path in (layout.state_dir, layout.pgdata):
        if os.stat(path).st_uid != os.geteuid():
            raise EmbeddedRefused(f"{path} belongs to another user; {SET_DATABASE_URL}")
    return layout


def root_base(environ: Mapping[str, str]) -> Path:
    """The directory that holds root's clusters, created 0755 if missing, its parents checked."""
    raw = environ.get(ROOT_DIR_ENV, "").strip()
    base = Path(raw) if raw else DEFAULT_ROOT_DIR
    if not base.is_absolute():
        raise EmbeddedRefused(f"{ROOT_DIR_ENV}: {raw!r} is not allowed (an absolute path)")
    base = Path(os.path.realpath(base))
    _check_chars(base)
    for parent in reversed(base.parents):
        _check_root_path(parent)
    try:
        _make_dir(base, 0o755)  # the server user traverses it to reach its own cluster
    except OSError as exc:
        raise EmbeddedRefused(f"cannot create {base}: {exc.strerror}; {SET_DATABASE_URL}") from exc
    _check_root_path(base)
    return base


def root_layout(project: Path, user: ServerUser, base: Path) -> Layout:
    """`base/<name>-<hash>`: root's files 0710 root:<server group>, pgdata owned by `user`."""
    layout = Layout(base / project_dir_name(project), user)
    if _make_dir(layout.state_dir, 0o710):
        os.chown(layout.state_dir, 0, user.gid)
    info = os.lstat(layout.state_dir)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise EmbeddedRefused(
            f"{layout.state_dir} is not a directory that only root may write; {SET_DATABASE_URL}"
        )
    if info.st_gid != user.gid:
        raise EmbeddedRefused(
            f"{layout.state_dir} belongs to another server user (group {info.st_gid}, not"
            f" {user.name}); remove it to start afresh, or {SET_DATABASE_URL}"
        )
    if _make_dir(layout.pgdata, 0o700):
        os.chown(layout.pgdata, user.uid, user.gid)
    info = os.lstat(layout.pgdata)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != user.uid:
        raise EmbeddedRefused(f"{layout.pgdata} is not owned by {user.name}; {SET_DATABASE_URL}")
    # Which project a cluster belongs to, for whoever lists the base directory.
    project_file = layout.state_dir / "project"
    if read_text(project_file) != f"{project}\n":
        write_file(project_file, f"{project}\n")
    return layout


def project_dir_name(project: Path) -> str:
    """`<readable name>-<hash of the absolute path>`: one cluster per project directory."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", project.name)[:40].lstrip(".") or "project"
    return f"{name}-{hashlib.sha256(str(project).encode()).hexdigest()[:12]}"


def _make_dir(path: Path, mode: int) -> bool:
    """Create `path` with exactly `mode`; False (and no chmod) if it already existed."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return False
    os.chmod(path, mode)
    return True


def _check_root_path(path: Path) -> None:
    """Only root may change `path` (or it is sticky, like /tmp), and any user may traverse it."""
    info = os.stat(path)
    writable = info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != 0)
    if info.st_uid != 0 or (writable and not info.st_mode & stat.S_ISVTX):
        raise EmbeddedRefused(
            f"{path} may be changed by a user other than root, so root keeps no embedded cluster"
            f" below it; set {ROOT_DIR_ENV} to another directory, or {SET_DATABASE_URL}"
        )
    if not info.st_mode & 0o001:
        raise EmbeddedRefused(
            f"{path} (mode {info.st_mode & 0o7777:04o}) cannot be traversed by the server's user,"
            f" and asynctask does not change the mode of a directory it did not create; set"
            f" {ROOT_DIR_ENV} to another directory, or {SET_DATABASE_URL}"
        )


def _check_chars(path: Path) -> None:
    if _SHELL_UNSAFE.search(str(path)):
        raise EmbeddedRefused(
            f"the embedded PostgreSQL cannot keep its data in {str(path)!r} (pg_ctl cannot quote"
            f' " $ ` or \\); run from another directory, or {SET_DATABASE_URL}'
        )
