"""The API's Prometheus metrics, in a registry of their own per app (never the global default).

HTTP and creation metrics are updated in memory per request; the task gauges come from the cached
statistics snapshot (asynctask/core/stats.py), so a scrape costs at most one query per cache window.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from asynctask.core.models import PRIORITIES, Priority, State
from asynctask.core.stats import CachedStats

UNMATCHED = "unmatched"
# Any token is a valid HTTP method, so a client could mint label values; these are the real ones.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TasksCollector(Collector):
    """Task counts, queue lag and database reachability, read from the cached snapshot."""

    def __init__(self, stats: CachedStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauges of the latest snapshot; without one, only asynctask_database_up 0."""
        snapshot = self._stats.latest
        yield GaugeMetricFamily(
            "asynctask_database_up",
            "1 if the last statistics query answered, else 0 (then the task gauges are absent).",
            value=0 if snapshot is None else 1,
        )
        if snapshot is None:
            return
        yield _task_counts(snapshot.counts)
        yield _per_priority(
            "asynctask_queue_lag_seconds",
            "Seconds since the oldest due task of a priority became due (0: none waiting).",
            snapshot.queue_lag_seconds,
        )
        yield _per_priority(
            "asynctask_workers",
            "Worker processes connected to the database, per priority, from every host.",
            snapshot.workers,
        )
        yield _per_priority(
            "asynctask_queue_paused",
            "1 while a priority is paused (asynctask pause), else 0.",
            {priority: 1 if queue.paused else 0 for priority, queue in snapshot.queues.items()},
        )


def _task_counts(counts: Mapping[Priority, Mapping[State, int]]) -> GaugeMetricFamily:
    """asynctask_tasks: one sample per state and priority."""
    tasks = GaugeMetricFamily(
        "asynctask_tasks",
        "Tasks in the table by state and priority.",
        labels=["state", "priority"],
    )
    for priority, states in counts.items():
        for state, count in states.items():
            tasks.add_metric([state, priority], count)
    return tasks


def _per_priority(
    name: str, documentation: str, values: Mapping[Priority, float]
) -> GaugeMetricFamily:
    """A gauge with one sample per priority, labelled `priority`."""
    gauge = GaugeMetricFamily(name, documentation, labels=["priority"])
    for priority, value in values.items():
        gauge.add_metric([priority], value)
    return gauge


class ApiMetrics:
    """One app's registry and the metrics the request path updates."""

    def __init__(self, stats: CachedStats) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.created = Counter(
            "asynctask_tasks_created",
            "Tasks created through the API (a batch counts each task).",
            ["priority"],
            registry=self.registry,
        )
        self.requests = Counter(
            "asynctask_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "asynctask_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            registry=self.registry,
        )
        self.registry.register(TasksCollector(stats))
        # labels() takes a lock and builds a key per call; at thousands of requests per second
        # keeping the children is cheaper. Bounded: routes x methods x statuses.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._created = {priority: self.created.labels(priority) for priority in PRIORITIES}
        for child in self._created.values():
            child.inc(0)  # export 0 from the start, so rate() sees the first task

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route, method),
            )
            self._children[key] = children
        count, duration = children
        count.inc()
        duration.observe(seconds)

    def tasks_created(self, priorities: Iterable[Priority]) -> None:
        """Count created tasks, given their priorities (one per task)."""
        for priority, n in Tally(priorities).items():
            self._created[priority].inc(n)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


async def route_label(request: web.Request) -> str:
    """The matched route's template (/api/tasks/{id}), never the raw path; `unmatched` if none."""
    resource = request.match_info.route.resource
    if resource is not None:
        return resource.canonical
    error = request.match_info.http_exception
    if error is not None and error.status == 405:
        # A 405 carries no resource; find the one whose path matched (rare, so a scan is fine).
        for candidate in request.app.router.resources():
            _, allowed = await candidate.resolve(request)
            if allowed:
                return candidate.canonical
    return UNMATCHED


def method_label(method: str) -> str:
    """The request method, or `other` for a made-up one (bounded label values)."""
    return method if method in _METHODS else "other"
