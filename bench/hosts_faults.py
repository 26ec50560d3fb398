"""The hosts harness's faults: added latency on a host, a host cut off from the database, a host
killed outright. Each returns a Fault: when it began and ended, and what the host held."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.apphost import AppHost
from bench.common import rows, scalar
from bench.netdelay import Latency
from bench.netns import Network

LATENCY, PARTITION, HOST_KILL = "latency", "partition", "host kill"


@dataclass
class Fault:
    """One injected fault (wall-clock times, comparable with log lines and execution records)."""

    kind: str
    host: str
    start: float
    end: float | None = None  # latency removed / partition healed
    held: list[int] = field(default_factory=list)  # tasks `running` under the host's name
    released: float | None = None  # when none of `held` was running under its name any more
    how: str = ""
    ms: int = 0  # the added latency
    timings: dict[str, float | None] = field(default_factory=dict)  # filled by the account


def held_by(url: str, host: str) -> list[int]:
    """Ids of the tasks claimed under a host's name and still `running`."""
    found = rows(
        url,
        "SELECT id FROM tasks WHERE state = 'running' AND locked_by LIKE %s ORDER BY id",
        (host + ":%",),
    )
    return [int(row[0]) for row in found]


def holds_a_slow_task(url: str, host: str) -> bool:
    """True if the host runs a slow task (>= 0.4 s) with 150 ms or more left: a fault started now
    still finds it.

    Waiting for any held task raced with the 1-5 ms ones, which could finish (and be written)
    between the check and the fault, so the fault found the host holding nothing.
    """
    sql = (
        "SELECT count(*) FROM tasks WHERE state = 'running' AND locked_by LIKE %s"
        " AND (data->>'ms')::int >= 400"
        " AND started_at > now() - ((data->>'ms')::int - 150) * interval '1 millisecond'"
    )
    return int(scalar(url, sql, (host + ":%",))) > 0


def _wait_released(url: str, host: str, held: list[int], until: float) -> float | None:
    """When none of `held` is `running` under the host's name any more (None: not by `until`)."""
    sql = (
        "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND state = 'running' AND locked_by LIKE %s"
    )
    while time.time() < until:
        if int(scalar(url, sql, (held, host + ":%"))) == 0:
            return time.time()
        time.sleep(0.1)
    return None


def add_latency(net: Network, host: str, ms: int, seconds: float) -> Fault:
    """Delay every packet the host sends by `ms` for `seconds`."""
    latency = Latency(net, host, ms)
    start = time.time()
    latency.start()
    try:
        time.sleep(seconds)
    finally:
        latency.stop()
    return Fault(LATENCY, host, start, time.time(), how=latency.how, ms=ms)


def cut_off(net: Network, host: str, database: str, url: str, seconds: float) -> Fault:
    """Partition the host from the database host for `seconds`, then heal it.

    What the host holds is read (over the harness's own link) right after the cut: from then on
    it can claim nothing more, so that is exactly what the other hosts must rescue.
    """
    start = time.time()
    net.partition(host, database)
    try:
        held = held_by(url, host)
        released = _wait_released(url, host, held, until=start + seconds)
        time.sleep(max(0.0, start + seconds - time.time()))
    finally:
        net.heal()
    how = "policy rules in the router drop every packet between the host and the database host"
    return Fault(PARTITION, host, start, time.time(), held=held, released=released, how=how)


def kill_host(host: AppHost, url: str, patience: float) -> Fault:
    """SIGKILL every process of the host; wait up to `patience` s for its tasks to be rescued."""
    start = time.time()
    host.kill()
    held = held_by(url, host.name)
    released = _wait_released(url, host.name, held, until=time.time() + patience)
    how = "every process of the host SIGKILLed at once; nothing restarts it"
    return Fault(HOST_KILL, host.name, start, held=held, released=released, how=how)
