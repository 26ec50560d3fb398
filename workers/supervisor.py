"""The supervisor: one process per slot, reaped at once, restarted with backoff, stopped cleanly.

No asyncio and no database here (gunicorn's arbiter, CPython's Pool): block on the children's
sentinels plus a signal wake-up pipe, with a 1 s tick for housekeeping. Signal handlers only
record; the loop acts. Children are spawned (never forked) and receive plain data only.
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
from multiprocessing.context import ForkServerContext, SpawnContext
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
from asynctask.workers.link import SlotLink
from asynctask.workers.metrics import (
    SupervisorMetrics,
    serve_supervisor_metrics,
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


# Imported once by the forkserver, so each worker it forks starts with them in place (a spawned
# interpreter would import them again: most of a worker's start-up time and CPU).
PRELOAD = ["asynctask.workers.forkserver"]


def start_contexts() -> dict[str, ForkServerContext | SpawnContext]:
    """The start methods children use, by name; never plain fork of this process.

    Workers come from a forkserver: a clean single-threaded process, started once and holding no
    connection, event loop or thread of ours, that forks each worker with asynctask's modules
    already imported; a replacement after a crash starts as fast. Services (the API) are spawned:
    a fresh interpreter, whose environment the supervisor still chooses at each start.
    """
    forkserver: ForkServerContext = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return {"forkserver": forkserver, "spawn": multiprocessing.get_context("spawn")}


class Supervisor:
    """Keeps one process per slot alive until told to stop."""

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
        self.contexts = start_contexts()
        self.host = socket.gethostname()
        self.stale_after = registry.max_timeout(config) + watchdog_grace
        # Made once per slot: every process of a slot gets the same link (and its pipe ends), so
        # a restarted worker rejoins its pool at once.
        forkserver = self.contexts["forkserver"]
        pipes = pool_pipes(forkserver, slots)
        self.children: list[Child] = [
            WorkerChild(SlotLink(forkserver, slot, pipes.get(slot.name)), config, target)
            for slot in slots
        ]
        self.children += [ServiceChild(spec) for spec in services]
        self.signals: list[int] = []
        self.halt: str | None = None
        self.stopping = False
        self._wakeup_r = -1
        self.metrics: SupervisorMetrics | None = None
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
            # Before the first spawn: the children must inherit the metrics directory.
            self.metrics = serve_supervisor_metrics(self.config, [c.name for c in self.children])
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
            if self.metrics is not None:
                self.metrics.close()
            if self.heartbeat is not None:
                self.heartbeat.remove()
        if self.halt:
            log.error("supervisor stopped: %s", self.halt)
            return 1
        log.info("supervisor stopped")
        return 0

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
        target, args = child.target()
        context = self.contexts[child.start_method]
        process = context.Process(target=target, args=args, name=child.name, daemon=False)
        with contextlib.nullcontext() if child.metrics_env else without_multiproc_env():
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
            reap_strangers({c.process.pid for c in self.children if c.process is not None})

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
