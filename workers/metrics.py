"""Worker metrics in prometheus-client's multiprocess mode, served by the supervisor.

Each worker process writes its counters to mmap files in PROMETHEUS_MULTIPROC_DIR; the supervisor
owns that directory (fresh per run, removed at exit) and serves the sum over all processes, live
and dead, so counts survive restarts. prometheus-client picks its value class from that variable
when it is first imported, so the supervisor sets it before it forks the workers' fork server:
every worker inherits it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from asynctask.core.config import Config
from asynctask.core.errors import ConfigError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import Counter, Histogram
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.registry import Collector

log = logging.getLogger("asynctask.supervisor")
ENV = "PROMETHEUS_MULTIPROC_DIR"
OUTCOMES = ("completed", "retrying", "failed", "cancelled")
# From 1 ms (the drain's tasks) to the 300 s default attempt timeout; few buckets keep the
# scrape small (types x buckets series) and `observe` short.
DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0, 300.0)


class WorkerMetrics:
    """One worker process's metrics; created only when the supervisor serves them."""

    def __init__(self, priority: str) -> None:
        # Imported here, never at module level: only a process that has ENV set may import it.
        from prometheus_client import Counter, Histogram, values

        # A worker inherits its modules from the fork server, which may hold prometheus-client
        # imported before ENV was set (a program that imported it before building the
        # supervisor): choose the value class again, now that ENV is set.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

        # registry=None: in multiprocess mode the mmap files are the registry; the supervisor's
        # MultiProcessCollector reads them.
        finished = Counter(
            "asynctask_worker_tasks_finished",
            "Attempts finished by the workers, by outcome (completed, retrying, failed,"
            " cancelled).",
            ["outcome", "priority"],
            registry=None,
        )
        self.duration = Histogram(
            "asynctask_worker_attempt_duration_seconds",
            "Wall time of one attempt, by task type.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        # labels() takes a lock and builds a key on every call: look each child up once. Creating
        # the children writes their 0, so rate() sees the first task.
        self.finished: dict[str, Counter] = {o: finished.labels(o, priority) for o in OUTCOMES}
        self._durations: dict[str, Histogram] = {}

    def observe(self, outcome: str, task_type: str, seconds: float | None) -> None:
        """Count one finished attempt; `seconds` None when no handler ran (unknown type)."""
        self.finished[outcome].inc()
        if seconds is None:
            return  # and no type label: an unknown type must not mint a series
        histogram = self._durations.get(task_type)
        if histogram is None:
            histogram = self._durations[task_type] = self.duration.labels(task_type)
        histogram.observe(seconds)


def worker_metrics(config: Config, priority: str) -> WorkerMetrics | None:
    """The worker's metrics if the supervisor serves them (metrics_port set and ENV inherited)."""
    if config.metrics_port is None or not os.environ.get(ENV):
        return None
    return WorkerMetrics(priority)


def supervisor_metrics(config: Config, slots: list[str]) -> SupervisorMetrics | None:
    """The metrics directory, made for the workers to inherit (not served yet); None if no port."""
    if config.metrics_port is None:
        return None
    return SupervisorMetrics(config.metrics_host, config.metrics_port, slots)


def serve_supervisor_metrics(metrics: SupervisorMetrics) -> None:
    """Serve on the metrics address; if it cannot be bound, clean up and name metrics_port."""
    try:
        metrics.serve()
    except OSError as exc:
        metrics.close()
        where = f"{metrics.host}:{metrics.port}"
        raise ConfigError(f"metrics_port: cannot serve on {where} ({exc})") from exc


class SupervisorMetrics:
    """The supervisor's side: the multiprocess directory, restart counts and the HTTP server."""

    def __init__(self, host: str, port: int, slots: list[str]) -> None:
        self.host, self.port = host, port
        self.restarts = dict.fromkeys(slots, 0)
        self._previous = os.environ.get(ENV)
        # A fresh directory per run: files left by an earlier run would be summed into this one.
        self.path = tempfile.mkdtemp(prefix="asynctask-metrics-")
        os.environ[ENV] = self.path
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serve /metrics from a daemon thread; OSError if the port is taken."""
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.path)  # type: ignore[no-untyped-call]
        registry.register(cast("Collector", _RestartsCollector(self.restarts)))
        # A thread in the supervisor is safe: the fork server was forked before it started, and
        # other children are spawned (fork + exec).
        self._server, self._thread = start_http_server(self.port, self.host, registry=registry)
        log.info(
            "serving worker metrics on http://%s:%d/metrics",
            self.host,
            self.port,
            extra={"port": self.port},
        )

    def restarted(self, slot: str) -> None:
        """Count one restart of a slot's process."""
        self.restarts[slot] = self.restarts.get(slot, 0) + 1

    def process_exited(self, pid: int | None) -> None:
        """Bookkeeping for a dead child (drops its live-gauge files; its counters stay)."""
        from prometheus_client import multiprocess

        if pid is not None:
            multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop serving, remove the directory and restore the environment."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        shutil.rmtree(self.path, ignore_errors=True)
        if self._previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._previous


class _RestartsCollector:
    """asynctask_worker_restarts_total{slot}, from the supervisor's own counts (no mmap file)."""

    def __init__(self, restarts: dict[str, int]) -> None:
        self._restarts = restarts

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Yield the restart counter family (called from the server thread)."""
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "asynctask_worker_restarts",
            "Processes the supervisor restarted after they died, by slot.",
            labels=["slot"],
        )
        for slot, count in list(self._restarts.items()):  # a copy: the main thread may add
            family.add_metric([slot], count)
        yield family


@contextlib.contextmanager
def without_multiproc_env() -> Iterator[None]:
    """Spawn a child outside multiprocess mode (the API child keeps its own in-memory registry)."""
    saved = os.environ.pop(ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[ENV] = saved
