"""The supervisor: one process per slot, reaped at once, restarted with backoff, stopped cleanly.

No asyncio and no database here (gunicorn's arbiter, CPython's Pool): block on the children's
sentinels plus a signal wake-up pipe, with a 1 s tick for housekeeping. Signal handlers only
record; the loop acts. Workers are forked by the fork server (workers/forkserver.py), which was
forked from this process before it held anything; services are spawned. Neither is ever forked
from the supervisor as it runs.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

from asynctask.core import backoff
from asynctask.core.config import Config
from asynctask.workers import registry, watchdog
from asynctask.workers.alive import heartbeat_file
from asynctask.workers.children import (
    Child,
    ServiceChild,
    ServiceSpec,
    WorkerChild,
    close_process,
    reap_strangers,
    stop_notice,
)
from asynctask.workers.forkserver import ForkServer, ServedProcess
from asynctask.workers.link import SlotLink
from asynctask.workers.metrics import (
    serve_supervisor_metrics,
    supervisor_metrics,
    without_multiproc_env,
)
from asynctask.workers.process import run_worker
from asynctask.workers.slots import EXIT_CONFIG_ERROR, EXIT_REPLACE_NOW, Slot, describe_exit
from asynctask.workers.wakeup import pool_pipes

log = logging.getLogger("asynctask.supervisor")
TICK_SECONDS = 1.0
STABLE_SECONDS = 30.0  # a child that lived this long resets its slot's restart backoff
STOP_GRACE_SECONDS = 5.0  # beyond shutdown_timeout_seconds, before SIGKILL
# Exit codes of a child that stopped as a stop asks: by itself, or by the SIGTERM we sent it or the
# SIGINT a terminal's Ctrl-C sends the whole process group.
ASKED_TO_STOP = (0, -signal.SIGTERM, -signal.SIGINT)


class Supervisor:
    """Keeps one process per slot alive until told to stop.

    Built before anything else is set up in this process (threads, signal handlers, sockets, the
    user's handler modules): building it forks the workers' fork server, which must hold none of
    that. `run` supervises and cleans up; `close` cleans up a supervisor that will not run.
    """

    def __init__(
        self,
        config: Config,
        slots: Sequence[Slot],
        *,
        services: Sequence[ServiceSpec] = (),
        target: Callable[..., None] = run_worker,
        watchdog_grace: float = watchdog.WATCHDOG_GRACE_SECONDS,
    ) -> None:
        self.config = config
        # Services (the API) are spawned: a fresh interpreter, whose environment the supervisor
        # still chooses at each start.
        self.spawn = multiprocessing.get_context("spawn")
        self.host = socket.gethostname()
        self.stale_after = registry.max_timeout(config) + watchdog_grace
        # Made once per slot: every process of a slot gets the same link (and its pipe ends), so
        # a restarted worker rejoins its pool at once.
        pipes = pool_pipes(self.spawn, slots)
        links = [SlotLink(self.spawn, slot, pipes.get(slot.name)) for slot in slots]
        self.children: list[Child] = [WorkerChild(link) for link in links]
        self.children += [ServiceChild(spec) for spec in services]
        self.signals: list[int] = []
        self.halt: str | None = None
        self.stopping = False
        self._wakeup_r = -1
        # Before the fork: the workers must inherit the metrics directory (prometheus-client
        # reads it when a worker first imports it).
        self.metrics = supervisor_metrics(config, [c.name for c in self.children])
        self.forkserver = ForkServer(links, config, target) if links else None
        self.heartbeat = heartbeat_file()  # a container's liveness check (workers/alive.py)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (exit 0) or a child's config error (exit 1)."""
        from setproctitle import setproctitle

        setproctitle("asynctask supervisor")
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._wakeup_r = read_end
        previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            if self.metrics is not None:
                serve_supervisor_metrics(self.metrics)
            log.info("supervisor started: %s", ", ".join(c.name for c in self.children))
            while not self.stopping:
                self._round()
            self._shutdown()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(read_end)
            os.close(write_end)
            self.close()
        if self.halt:
            log.error("supervisor stopped: %s", self.halt)
            return 1
        log.info("supervisor stopped")
        return 0

    def close(self) -> None:
        """Stop the fork server, remove the metrics directory and heartbeat file (idempotent)."""
        if self.forkserver is not None:
            self.forkserver.close()
            self.forkserver = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.heartbeat is not None:
            self.heartbeat.remove()
            self.heartbeat = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record: the wake-up fd has already woken the loop, which does the work.
        self.signals.append(signum)

    def _round(self) -> None:
        self._start_due()
        self._wait(self._next_timeout())
        if self.signals:
            log.info("received %s: stopping", signal.Signals(self.signals[0]).name)
            self.stopping = True
        self._reap()
        self._watch()
        if self.halt:
            self.stopping = True

    def _next_timeout(self) -> float:
        due = [c.restart_at for c in self.children if c.process is None and c.restart_at]
        soonest = min(due, default=time.monotonic() + TICK_SECONDS)
        return max(0.0, min(TICK_SECONDS, soonest - time.monotonic()))

    def _wait(self, timeout: float) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat()
        sentinels = [c.process.sentinel for c in self.children if c.process is not None]
        wait([*sentinels, self._wakeup_r], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wakeup_r, 512):
                pass

    def _start_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None and child.restart_at is not None and child.restart_at <= now:
                self._spawn(child)

    def _spawn(self, child: Child) -> None:
        process: ServedProcess | SpawnProcess
        if isinstance(child, WorkerChild):
            assert self.forkserver is not None  # there is one whenever there are worker slots
            try:
                process = self.forkserver.start(child.name, child.spawning())
            except OSError as exc:
                log.error(
                    "cannot start %s: %s; trying again in %.0f s", child.name, exc, TICK_SECONDS
                )
                child.restart_at = time.monotonic() + TICK_SECONDS
                return
        else:
            assert isinstance(child, ServiceChild)
            target, args = child.target()
            # A service's metrics stay in its own registry: in multiprocess mode they would also
            # be written to the workers' directory and show up among theirs.
            process = self.spawn.Process(target=target, args=args, name=child.name, daemon=False)
            with without_multiproc_env():
                process.start()
        child.process, child.started, child.restart_at = process, time.monotonic(), None
        child.kill_reason = None
        fields = {"event": "started", "slot": child.name, "pid": process.pid}
        log.info("started %s (pid %s)", child.name, process.pid, extra=fields)

    def _reap(self) -> None:
        for child in self.children:
            process = child.process
            if process is None or process.is_alive():  # is_alive() reaps a dead child
                continue
            cause = child.kill_reason or describe_exit(process.exitcode)
            if isinstance(process, ServedProcess) and process.orphaned:
                cause = "killed: the forkserver died before it could report this process's exit"
            pid, code = process.pid, process.exitcode
            close_process(child)
            if self.metrics is not None:
                self.metrics.process_exited(pid)
            if self.stopping:
                if code in ASKED_TO_STOP:  # what the stop asked of it, however it got the signal
                    log.info("%s (pid %s) stopped", child.name, pid)
                else:
                    log.warning("%s (pid %s) exited while stopping: %s", child.name, pid, cause)
                continue
            child.died(self.host, pid, cause)
            self._after_death(child, pid, code, cause)
        if os.getpid() == 1:
            ours = {c.process.pid for c in self.children if c.process is not None}
            if self.forkserver is not None:
                ours.add(self.forkserver.pid)  # our child; multiprocessing reaps it
            reap_strangers(ours)

    def _after_death(self, child: Child, pid: int | None, code: int | None, cause: str) -> None:
        name = child.name
        if code == EXIT_CONFIG_ERROR:
            self.halt = f"{name} could not load its handlers or config (see its error above)"
            return
        now = time.monotonic()
        if self.metrics is not None:
            self.metrics.restarted(name)
        fields: dict[str, Any] = {"event": "restart", "slot": name, "pid": pid, "cause": cause}
        if code == EXIT_REPLACE_NOW:
            stuck = "%s (pid %s) asked to be replaced (a handler thread is stuck)"
            log.warning(stuck, name, pid, extra={**fields, "restart_in": 0.0})
            child.restart_at = now
            return
        if now - child.started > STABLE_SECONDS:
            child.failures = 0
        child.failures += 1
        # The first crash of a stable slot is replaced at once: its unwritten completions and
        # running task wait for the replacement, and the slot's share of the queue idles until
        # then. Backoff starts with the second crash in a row, so a crash loop still cannot spin.
        delay = backoff.restart_delay(child.failures - 1)
        fields["restart_in"] = round(delay, 3)
        log.error(
            "%s (pid %s) died: %s; restarting in %.2f s", name, pid, cause, delay, extra=fields
        )
        child.restart_at = now + delay

    def _watch(self) -> None:
        """Kill children whose loop stopped beating or whose memory is over the limit."""
        limit_mb = self.config.worker_max_memory_mb
        for child, pid, reason in watchdog.overdue(self.children, self.stale_after, limit_mb):
            self._kill(child, pid, reason)

    def _kill(self, child: Child, pid: int, reason: str) -> None:
        log.error("%s (pid %s) %s", child.name, pid, reason)
        child.kill_reason = reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _shutdown(self) -> None:
        """SIGTERM everyone, wait for the grace period while reaping, then SIGKILL the rest."""
        from setproctitle import setproctitle

        setproctitle("asynctask supervisor (stopping)")  # what ps shows during the grace period
        live = [c.process for c in self.children if c.process is not None]
        grace = self.config.shutdown_timeout_seconds + STOP_GRACE_SECONDS
        log.info("%s", stop_notice(self.children, self.config.shutdown_timeout_seconds))
        for process in live:
            process.terminate()
        deadline = time.monotonic() + grace
        handled = len(self.signals)
        hard = handled > 1  # two signals before we even got here: no grace
        while not hard and any(c.process for c in self.children) and time.monotonic() < deadline:
            self._wait(min(TICK_SECONDS, deadline - time.monotonic()))
            self._reap()
            hard = len(self.signals) > handled
        if hard:
            log.warning("second signal: killing the remaining processes now")
        for child in self.children:
            if child.process is not None:
                child.process.kill()
                child.process.join()
                log.info("%s (pid %s) killed", child.name, child.process.pid)
                close_process(child)
