"""The workers' fork server: a clean copy of the supervisor that forks every worker.

The supervisor forks it once, as it is built: after asynctask's modules are imported, before it
holds a thread, a signal handler, a socket or a connection, and before the user's handler modules
are imported. Each worker is a fork of it, so a worker starts with asynctask imported and nothing
of the supervisor's: one import for the whole process tree at start, and a replacement after a
crash connected in milliseconds. (multiprocessing's forkserver gives the same clean parent, but
execs a fresh interpreter that imports everything a second time: half of the start-up.)

A worker is the server's child, not the supervisor's, so the supervisor cannot wait() for it: for
each worker the server sends back its pid and the read end of a pipe, on which it writes the exit
status when it reaps the worker. ServedProcess is the supervisor's handle on that. A server that
dies is replaced by a spawned one (a fresh interpreter: by then the supervisor holds threads and
sockets, so it is no longer fit to fork); the workers it leaves behind are killed, since no one
could report their exit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import NoReturn

from setproctitle import setproctitle

from asynctask.core.config import Config
from asynctask.workers.link import DeadWorker, SlotLink

log = logging.getLogger("asynctask.supervisor")
Run = Callable[[SlotLink, Config], None]
STATUS = struct.Struct("i")  # a worker's exit code, as multiprocessing reports it (-N: signal N)
PID = struct.Struct("q")
REQUEST_BYTES = 1 << 16  # one request: a slot name and its predecessor record (a few KB at most)
# The server answers at once; it may take this long only on a machine that has stalled. A reply
# later than this leaves the worker it forked unwatched (the server is replaced without it).
REPLY_TIMEOUT_SECONDS = 30.0
EXIT_TIMEOUT_SECONDS = 5.0  # for the server to go once its socket is closed
# The supervisor decides what a stop means; the server goes when the supervisor does (EOF).
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class ServedProcess:
    """A worker forked by the server, seen from the supervisor as a multiprocessing Process."""

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid = pid
        self.sentinel = status_fd  # readable once the server has written the exit status
        self.orphaned = False  # the server died first: the worker was killed, its status is lost
        self._exitcode: int | None = None

    @property
    def exitcode(self) -> int | None:
        """The exit code (negative: killed by that signal), None while it runs."""
        self._read_status(0)
        return self._exitcode

    def is_alive(self) -> bool:
        """True until its exit status has come in."""
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` seconds (None: for ever) for it to exit."""
        self._read_status(timeout)

    def terminate(self) -> None:
        """SIGTERM (a graceful stop)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        """Release the status pipe; ValueError while the process runs (as multiprocessing)."""
        if self.sentinel < 0:
            return
        if self.exitcode is None:
            raise ValueError("cannot close a process that is still running")
        os.close(self.sentinel)
        self.sentinel = -1

    def _signal(self, signum: int) -> None:
        # Only while no status came: the server reaps at once, so a pid with a status may be reused.
        if self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def _read_status(self, timeout: float | None) -> None:
        if self._exitcode is not None or self.sentinel < 0 or not wait([self.sentinel], timeout):
            return
        data = os.read(self.sentinel, STATUS.size)  # one write of 4 bytes: never split
        if len(data) == STATUS.size:
            self._exitcode = STATUS.unpack(data)[0]
            return
        # EOF: the server died without reporting it. It may still run, with no one to tell us
        # when it stops: kill it, so that its slot's replacement is the only one.
        self.orphaned = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._exitcode = -signal.SIGKILL


class ForkServer:
    """The supervisor's end: forks the server, asks it for workers, replaces it if it dies."""

    def __init__(self, links: Iterable[SlotLink], config: Config, run: Run) -> None:
        self._links = {link.slot.name: link for link in links}
        self._config = config
        self._run = run
        self._process: BaseProcess | None = None
        self._requests: socket.socket | None = None
        self._start(multiprocessing.get_context("fork"))

    @property
    def pid(self) -> int | None:
        """The server's pid (None once closed)."""
        return self._process.pid if self._process is not None else None

    def start(self, slot: str, predecessor: DeadWorker | None) -> ServedProcess:
        """A new process for `slot`, told whom it replaces; OSError if no server can fork one."""
        try:
            return self._ask(slot, predecessor)
        except OSError as exc:
            log.warning("the forkserver is gone (%s): starting a new one", exc)
        self._replace()
        return self._ask(slot, predecessor)

    def close(self) -> None:
        """Stop the server (it exits when its end of the socket closes)."""
        if self._requests is not None:
            self._requests.close()
            self._requests = None
        if self._process is not None:
            if not _gone(self._process, EXIT_TIMEOUT_SECONDS):
                self._process.kill()
                _gone(self._process, EXIT_TIMEOUT_SECONDS)
            with contextlib.suppress(ValueError):  # reaped by someone else: "still running"
                self._process.close()
            self._process = None

    def _start(self, ctx: BaseContext) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A forked server inherits our end too, and must drop it to see us go; a spawned one
        # receives only its own.
        drop = mine.fileno() if ctx.get_start_method() == "fork" else None
        args = (theirs, self._links, self._config, self._run, drop)
        process = ctx.Process(target=serve, args=args, name="forkserver", daemon=False)  # type: ignore[attr-defined]
        process.start()
        theirs.close()
        mine.settimeout(REPLY_TIMEOUT_SECONDS)
        self._process, self._requests = process, mine

    def _replace(self) -> None:
        self.close()
        self._start(multiprocessing.get_context("spawn"))

    def _ask(self, slot: str, predecessor: DeadWorker | None) -> ServedProcess:
        if self._requests is None or self._process is None or not self._process.is_alive():
            raise ConnectionError("the forkserver exited")
        self._requests.send(pickle.dumps((slot, predecessor)))
        data, fds, _flags, _address = socket.recv_fds(self._requests, PID.size, 1)
        if len(data) != PID.size or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ConnectionError("the forkserver closed the connection")
        return ServedProcess(PID.unpack(data)[0], fds[0])


def _gone(process: BaseProcess, timeout: float) -> bool:
    """Wait up to `timeout` s for the server to exit. Not join(): its sentinel pipe stays open
    in every worker it forked (they inherit the write end), so it shows nothing while one lives."""
    deadline = time.monotonic() + timeout
    while process.is_alive():  # waitpid: tells a dead server from a live one at once
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# --- the server's side --------------------------------------------------------------------------


def serve(
    requests: socket.socket,
    links: dict[str, SlotLink],
    config: Config,
    run: Run,
    supervisor_end: int | None,
) -> None:
    """The server: fork a worker per request, report each one's exit; return when asked by EOF."""
    if supervisor_end is not None:
        os.close(supervisor_end)
    setproctitle("asynctask forkserver")
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a child's exit (SIGCHLD) wakes the wait below
    signal.signal(signal.SIGCHLD, _on_child)
    statuses: dict[int, int] = {}  # worker pid -> write end of its status pipe
    while True:
        ready = wait([requests, wake_r])
        with contextlib.suppress(BlockingIOError):
            while os.read(wake_r, 512):
                pass
        _reap(statuses)
        if requests not in ready:
            continue
        try:
            request = requests.recv(REQUEST_BYTES)
        except ConnectionError:
            request = b""
        if not request:
            return  # the supervisor closed its end, or died
        # From the supervisor, over a socket pair no other process holds.
        slot, predecessor = pickle.loads(request)  # noqa: S301
        ours = [requests.fileno(), wake_r, wake_w, *statuses.values()]
        pid, status_r, status_w = _fork(links[slot], predecessor, config, run, ours)
        statuses[pid] = status_w
        try:
            socket.send_fds(requests, [PID.pack(pid)], [status_r])
        except OSError:
            return  # the supervisor died while asking; the worker sees it go (its sentinel)
        finally:
            os.close(status_r)


def _on_child(signum: int, frame: object) -> None:
    """Nothing to do here: the wake-up fd has woken the loop, which reaps."""


def _reap(statuses: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_w = statuses.pop(pid, None)
        if status_w is not None:
            with contextlib.suppress(OSError):  # a supervisor that is gone reads nothing
                os.write(status_w, STATUS.pack(os.waitstatus_to_exitcode(status)))
            os.close(status_w)


def _fork(
    link: SlotLink, predecessor: DeadWorker | None, config: Config, run: Run, ours: list[int]
) -> tuple[int, int, int]:
    status_r, status_w = os.pipe()
    # Blocked across the fork: a SIGTERM sent to the new pid before the child has restored the
    # default action waits, instead of being ignored as it would be here.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _child(link, predecessor, config, run, [*ours, status_r, status_w])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return pid, status_r, status_w


def _child(
    link: SlotLink, predecessor: DeadWorker | None, config: Config, run: Run, theirs: list[int]
) -> NoReturn:
    """A new worker: undo what is the server's, run, and exit with run's status."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (*STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        for fd in theirs:
            os.close(fd)
        link.predecessor = predecessor
        run(link, config)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_code(code: object) -> int:
    """The process exit code `sys.exit(code)` stands for (an object other than int: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
