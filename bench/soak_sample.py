"""The soak's samples: latency, depth, sizes, dead tuples (database); RSS and CPU (/proc).

A task's end-to-end latency is `finished_at - inserted_at`, both stamped by the server: from the
create's transaction to the transaction that recorded the task completed. Each sample takes the
tasks finished in its window, which ends 1 s before the sample so that an acknowledgement still
committing is counted in the next window instead of missed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import psycopg2.extensions
import psycopg2.extras

from bench.common import percentile

_TICKS = os.sysconf("SC_CLK_TCK")

_TASKS_SQL = """
WITH cut AS (SELECT now() - interval '1 second' AS until)
SELECT cut.until,
  count(t.id) AS rows,
  count(t.id) FILTER (WHERE t.state IN ('available', 'retrying')) AS due,
  count(t.id) FILTER (WHERE t.state = 'running') AS running,
  count(t.id) FILTER (WHERE t.state = 'failed') AS failed,
  coalesce(array_agg(extract(epoch FROM t.finished_at - t.inserted_at)::float8 * 1000)
    FILTER (WHERE t.state = 'completed' AND t.finished_at >= %(since)s
            AND t.finished_at < cut.until), '{}') AS latencies_ms
FROM cut LEFT JOIN tasks t ON true
GROUP BY cut.until
"""

_SIZES_SQL = """
SELECT pg_relation_size('tasks') AS heap_bytes,
  pg_total_relation_size('tasks') AS total_bytes,
  (SELECT json_object_agg(indexrelid::regclass::text, pg_relation_size(indexrelid))
     FROM pg_index WHERE indrelid = 'tasks'::regclass) AS index_bytes,
  n_live_tup AS live_tuples, n_dead_tup AS dead_tuples, n_tup_del AS deleted,
  autovacuum_count AS autovacuums
FROM pg_stat_user_tables WHERE relid = 'tasks'::regclass
"""


@dataclass
class Sample:
    """One 10-second window of the soak (t is its end, in seconds since the soak started)."""

    t: float
    creates: int = 0
    errors: int = 0
    missed: int = 0  # creates the load skipped: all its connections were waiting
    post_p50_ms: float | None = None  # POST /api/tasks answered, as the load generator saw it
    post_p99_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    finished: int = 0
    rows: int = 0
    due: int = 0
    running: int = 0
    failed: int = 0
    heap_bytes: int = 0
    total_bytes: int = 0
    index_bytes: dict[str, int] = field(default_factory=dict)
    live_tuples: int = 0
    dead_tuples: int = 0
    deleted: int = 0  # rows deleted since the soak started (the statistics' n_tup_del)
    autovacuums: int = 0  # autovacuum runs on tasks since the soak started
    rss_bytes: dict[str, int] = field(default_factory=dict)  # asynctask process -> RSS
    cpu_percent: dict[str, float] = field(default_factory=dict)  # process -> % of one core
    pids: dict[str, int] = field(default_factory=dict)
    load1: float = 0.0  # the machine's 1-minute load average
    machine_cpu_percent: float = 0.0  # every process on the machine, % of one core (2 cores: 200)
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def as_json(self) -> dict[str, Any]:
        """Everything but the raw latencies."""
        return {k: v for k, v in self.__dict__.items() if k != "latencies_ms"}


def process_name(pid: int) -> str:
    """A process's name in the charts: its title without 'asynctask ' (setproctitle sets it)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if cmdline.startswith("asynctask worker "):
        return cmdline.removeprefix("asynctask worker ")
    if cmdline.startswith("asynctask "):
        return cmdline.removeprefix("asynctask ")
    return cmdline.split(" ", 1)[0] or str(pid)


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """utime + stime of a process, from /proc/<pid>/stat; `reaped` adds its exited children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # 16 and 17: children waited for
    return ticks / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / _TICKS


def tree(pid: int) -> list[int]:
    """A process and its live descendants."""
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


class Sampler:
    """Takes the samples: one database connection, the asynctask process tree, other CPU groups."""

    def __init__(self, url: str, service_pid: int, groups: dict[str, list[int]]) -> None:
        self.conn = psycopg2.connect(url, application_name="soak sampler")
        self.conn.autocommit = True
        self.service_pid = service_pid
        self.groups = groups  # name -> root pids whose whole trees' CPU is summed (postgres, load)
        self.started = time.monotonic()
        self.since: Any = None
        self.base: dict[str, int] = {}
        self.cpu: dict[str, tuple[int, float]] = {}  # name -> (pid, cpu seconds) last sample
        self.machine_percent = 0.0
        self.cpu_at = self.started
        self.busy = machine_busy_seconds()

    def close(self) -> None:
        """Close the database connection."""
        self.conn.close()

    def begin(self) -> None:
        """Mark the start: windows, deletions and vacuum counts are measured from here."""
        self.since = self._row("SELECT now() - interval '1 second' AS until")["until"]
        sizes = self._sizes()
        self.base = {"deleted": sizes["deleted"], "autovacuums": sizes["autovacuums"]}
        self.started = time.monotonic()
        self._cpu_percent()

    def take(self, creates: int = 0, errors: int = 0) -> Sample:
        """One sample; `creates` and `errors` are the load's counts in this window."""
        sample = Sample(t=round(time.monotonic() - self.started, 1), creates=creates, errors=errors)
        self._tasks(sample)
        sizes = self._sizes()
        sample.index_bytes = sizes.pop("index_bytes") or {}
        sizes["deleted"] -= self.base["deleted"]
        sizes["autovacuums"] -= self.base["autovacuums"]
        for key, value in sizes.items():
            setattr(sample, key, int(value))
        pids = {process_name(pid): pid for pid in tree(self.service_pid)}
        sample.pids = pids
        sample.rss_bytes = {name: rss_bytes(pid) for name, pid in pids.items()}
        sample.cpu_percent = self._cpu_percent()
        sample.machine_cpu_percent = self.machine_percent
        sample.load1 = os.getloadavg()[0]
        return sample

    def _tasks(self, sample: Sample) -> None:
        row = self._row(_TASKS_SQL, {"since": self.since})
        self.since = row["until"]
        for key in ("rows", "due", "running", "failed"):
            setattr(sample, key, int(row[key]))
        sample.latencies_ms = [round(v, 3) for v in row["latencies_ms"]]
        sample.finished = len(sample.latencies_ms)
        if sample.latencies_ms:
            sample.p50_ms = round(percentile(sample.latencies_ms, 0.50), 2)
            sample.p99_ms = round(percentile(sample.latencies_ms, 0.99), 2)

    def _sizes(self) -> dict[str, Any]:
        return self._row(_SIZES_SQL)

    def _row(self, sql: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        if row is None:
            raise RuntimeError("a sampling query returned no row")
        return dict(row)

    def _cpu_percent(self) -> dict[str, float]:
        now = time.monotonic()
        seconds: dict[str, tuple[int, float]] = {}
        for pid in tree(self.service_pid):
            try:
                seconds[process_name(pid)] = (pid, cpu_seconds(pid))
            except OSError:
                continue  # exited between the listing and the read
        for name, roots in self.groups.items():
            # The root's reaped children count too: PostgreSQL's autovacuum workers come and go.
            total = 0.0
            for root in roots:
                for pid in tree(root):
                    try:
                        total += cpu_seconds(pid, reaped=pid == root)
                    except OSError:
                        continue
            seconds[name] = (0, total)
        elapsed = max(now - self.cpu_at, 1e-6)
        busy = machine_busy_seconds()
        self.machine_percent = round(100 * (busy - self.busy) / elapsed, 1)
        self.busy = busy
        result = {}
        for name, (pid, used) in seconds.items():
            previous = self.cpu.get(name)
            if previous is not None and previous[0] == pid:  # a replaced process starts afresh
                result[name] = round(100 * (used - previous[1]) / elapsed, 1)
        self.cpu, self.cpu_at = seconds, now
        return result
