"""One server shared by every asynctask process of a project; the last one to exit stops it.

Two flock(2) files in the cluster's state directory: `lock`, held exclusively around every start
and stop decision, and `users`, on which each process using the server holds a shared lock for
its lifetime. The kernel drops a process's locks when it dies, even by SIGKILL, so no list of
pids can go stale: on exit, a process that can then lock `users` exclusively was the last user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from asynctask.embedded import cluster
from asynctask.embedded.layout import Layout


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold `path`'s exclusive lock (other asynctask processes wait)."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Lease:
    """This process's use of a running server; take it while holding the `lock` file."""

    def __init__(self, layout: Layout, bin_dir: Path) -> None:
        self.layout = layout
        self.bin_dir = bin_dir
        self.pid = os.getpid()
        self._fd = _open(layout.users_file)
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        """Stop using the server; stop it if no other process uses it. Idempotent."""
        if self._fd < 0 or os.getpid() != self.pid:  # a forked child inherits no lease
            return
        with exclusive(self.layout.lock_file):
            os.close(self._fd)
            self._fd = -1
            if _nobody_uses(self.layout.users_file):
                cluster.stop(self.layout, self.bin_dir)


def _nobody_uses(users_file: Path) -> bool:
    fd = _open(users_file)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
