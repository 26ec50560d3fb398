"""The OS user that runs the embedded server when asynctask runs as root (PostgreSQL refuses root).

It has its own group, is in no other group, cannot log in, and owns nothing but the data
directories asynctask creates for it.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asynctask.embedded.files import SET_DATABASE_URL, EmbeddedRefused

log = logging.getLogger("asynctask.embedded")

USER_ENV = "ASYNCTASK_EMBEDDED_USER"
DEFAULT_USER = "asynctask-postgres"
NO_LOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/usr/bin/false", "/bin/false")
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class ServerUser:
    """Who the server runs as; None in a Layout means the calling (non-root) user."""

    name: str
    uid: int
    gid: int

    def subprocess_kwargs(self) -> dict[str, Any]:
        """Run a child as this user in its own group only: no supplementary group, never root's."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def server_user_name(environ: Mapping[str, str]) -> str:
    """The configured user name (ASYNCTASK_EMBEDDED_USER), checked, or the default."""
    name = environ.get(USER_ENV, "").strip() or DEFAULT_USER
    if not _NAME.fullmatch(name):
        raise EmbeddedRefused(
            f"{USER_ENV}: {name!r} is not allowed (a user name: lower-case letters, digits, _ or -)"
        )
    return name


def ensure_server_user(name: str) -> ServerUser:
    """The user `name`, created if missing (logged once); refused if it could log in or is root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = _create(name)
    problem = _unsafe(entry)
    if problem:
        raise EmbeddedRefused(
            f"the OS user {name} that would run the embedded PostgreSQL {problem}; remove it or set"
            f" {USER_ENV} to another name, or {SET_DATABASE_URL}"
        )
    return ServerUser(name, entry.pw_uid, entry.pw_gid)


def _create(name: str) -> pwd.struct_passwd:
    shell = next((s for s in NO_LOGIN_SHELLS if os.path.exists(s)), NO_LOGIN_SHELLS[-1])
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    command = [
        *(useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"),
        *("--shell", shell, "--comment", "asynctask embedded PostgreSQL", name),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    except OSError as exc:
        raise EmbeddedRefused(
            f"could not create the OS user {name} for the embedded PostgreSQL ({exc});"
            f" {SET_DATABASE_URL}"
        ) from exc
    try:
        entry = pwd.getpwnam(name)  # also when a parallel asynctask created it first
    except KeyError:
        reason = done.stderr.strip().replace("\n", " ")
        raise EmbeddedRefused(
            f"could not create the OS user {name} for the embedded PostgreSQL ({reason});"
            f" {SET_DATABASE_URL}"
        ) from None
    if done.returncode == 0:
        log.warning(
            "created the OS user %s (group %s, shell %s, no home) to run the embedded PostgreSQL"
            " as root; remove it with `userdel %s` once no embedded cluster needs it",
            name,
            grp.getgrgid(entry.pw_gid).gr_name,
            entry.pw_shell,
            name,
        )
    return entry


def _unsafe(entry: pwd.struct_passwd) -> str:
    """Why this user must not run the server, or '' if it may."""
    if entry.pw_uid == 0:
        return "is root (uid 0)"
    if entry.pw_gid == 0:
        return "has the root group (gid 0)"
    if entry.pw_shell not in NO_LOGIN_SHELLS:
        return f"has the login shell {entry.pw_shell}"
    if 0 in os.getgrouplist(entry.pw_name, entry.pw_gid):
        return "is a member of the root group"
    return ""
