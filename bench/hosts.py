"""Several hosts in network namespaces sharing one database: a partition, latency, a killed host.

Builds a router namespace, a database host running its own PostgreSQL cluster (autovacuum on),
and three application hosts, each running `asynctask run` (API + workers) over veth links
(bench/netns.py, bench/pgcluster.py, bench/apphost.py). While tasks flow in through every host's
API (short and slow handlers, every run recorded), it adds latency to app2, cuts app1 off from
the database for longer than the lease and heals it, then SIGKILLs app3. Prints the account
(bench/hosts_account.py) and how long each fault took to be noticed and recovered from. Needs
root, iproute2, setpriv, and sch_netem or /dev/net/tun. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import psutil

from bench.apphost import AppHost
from bench.common import asynctask, base_parser, connect, env, report, scalar, wait_for, wait_http
from bench.feed import FeedStats, post_tasks
from bench.hosts_account import (
    AUDIT_DDL,
    REQUEST_TIMEOUT,
    HostsAccount,
    load_executions,
    render,
    tally,
)
from bench.hosts_faults import (
    Fault,
    add_latency,
    cut_off,
    held_by,
    holds_a_slow_task,
    kill_host,
)
from bench.hosts_timing import timings
from bench.netns import Network, alive, remove_stale
from bench.pgcluster import Cluster
from bench.probe import Probes

LEASE_SECONDS = 5.0
CUT, DELAYED, KILLED = "app1", "app2", "app3"
CONFIG = {
    "database": {"pool_size": 4},
    "priority_queues": {"high": 2, "normal": 1, "low": 1},
    "lease_seconds": LEASE_SECONDS,
    "timeout_milliseconds": 200,
    "shutdown_timeout_seconds": 5,
    "handlers": {"record": "bench.chaos_handlers:record"},
}
BATCH = 20
WORK_PREFIX = "asynctask-hosts-"


@dataclass
class Plan:
    """How much load, and how long each phase lasts (seconds)."""

    tasks: int = 6000
    warm: float = 5.0
    latency: float = 15.0
    latency_ms: int = 50
    gap: float = 5.0
    cut: float = 15.0  # longer than the lease, plus the rescue's period (lease / 2)
    tail: float = 15.0  # creates go on after the kill: the healed host's workers resume late
    slow_every: int = 25  # every 25th task takes 0.4-1.6 s, the others 1-5 ms

    @property
    def feed_seconds(self) -> float:
        """Creates are spread over the faults and the tail."""
        return self.warm + self.latency + self.gap + self.cut + self.gap + self.tail


PLAN_HELP = {
    "tasks": "tasks created over HTTP",
    "warm": "seconds of load before the first fault",
    "latency": "seconds app2 is delayed",
    "latency_ms": "its added delay per packet (ms)",
    "gap": "seconds between faults",
    "cut": "seconds app1 is cut off from the database",
    "tail": "seconds of creates after app3 is killed",
    "slow_every": "every Nth task is slow (0.4-1.6 s)",
}


def _task(key: int, plan: Plan) -> dict[str, Any]:
    ms = 400 + (key * 37) % 1200 if key % plan.slow_every == 0 else 1 + key % 5
    priority = ("high", "high", "normal", "low")[key % 4]
    return {"type": "record", "priority": priority, "data": {"k": key, "ms": ms}}


def _feeders(plan: Plan, hosts: list[AppHost], stats: FeedStats) -> list[threading.Thread]:
    """Per host: a fifth of its share as single creates, the rest in batches, spread evenly."""
    tasks = [_task(k, plan) for k in range(plan.tasks)]
    threads = []
    for i, host in enumerate(hosts):
        mine = tasks[i :: len(hosts)]
        bases = [host.base] + [h.base for h in hosts if h is not host]
        for share, batch in ((mine[: len(mine) // 5], 1), (mine[len(mine) // 5 :], BATCH)):
            interval = plan.feed_seconds / max(1, math.ceil(len(share) / batch))
            kwargs = {"batch": batch, "interval": interval, "stats": stats}
            kwargs |= {"timeout": REQUEST_TIMEOUT}
            threads.append(
                threading.Thread(target=post_tasks, args=(bases, share), kwargs=kwargs, daemon=True)
            )
    return threads


def _wait_holding(url: str, host: str) -> None:
    """Until the host runs a slow task; failing that, any task; failing that too (on a slow
    machine the faults can outlast the feed), the fault goes ahead on an idle host: the account
    then shows it held nothing, and its checks still hold."""
    try:
        wait_for(lambda: holds_a_slow_task(url, host), 20)
    except TimeoutError:
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: bool(held_by(url, host)), 10)


def _faults(plan: Plan, net: Network, url: str, hosts: dict[str, AppHost]) -> list[Fault]:
    time.sleep(plan.warm)
    faults = [add_latency(net, DELAYED, plan.latency_ms, plan.latency)]
    time.sleep(plan.gap)
    # Each fault starts while its host runs a task, so it meets running work.
    _wait_holding(url, CUT)
    faults.append(cut_off(net, CUT, "db", url, plan.cut))
    time.sleep(plan.gap)
    _wait_holding(url, KILLED)
    faults.append(kill_host(hosts[KILLED], url, patience=4 * LEASE_SECONDS))
    return faults


def _pending(url: str) -> int:
    sql = "SELECT count(*) FROM tasks WHERE state IN ('available', 'retrying', 'running')"
    return int(scalar(url, sql))


def _flow(plan: Plan, net: Network, url: str, hosts: list[AppHost]) -> HostsAccount:
    """Feed, inject the faults, drain, stop the hosts cleanly (last acks written), account."""
    probes = Probes({h.name: h.base for h in hosts})
    stats = FeedStats()
    feeders = _feeders(plan, hosts, stats)
    started = time.time()
    try:
        for feeder in feeders:
            feeder.start()
        faults = _faults(plan, net, url, {h.name: h for h in hosts})
        for feeder in feeders:
            feeder.join(plan.feed_seconds + 120)
        wait_for(lambda: _pending(url) == 0, 300)
        drain = time.time() - started
    finally:
        stats.stop.set()
        probes.stop()
        for host in hosts:
            host.stop()
    taps = {h.name: h.tap for h in hosts if h.tap is not None}
    conn = connect(url)
    try:
        load_executions(conn, hosts)

        def first_run_after(host: str, after: float) -> float | None:
            sql = "SELECT min(at) FROM executions WHERE host = %s AND at >= %s"
            return scalar(url, sql, (host, after))  # type: ignore[no-any-return]

        for fault in faults:
            fault.timings = timings(fault, probes, taps, first_run_after)
        feed = {
            "requests": stats.requests,
            "failures": stats.failures,
            "failovers": stats.failovers,
        }
        return tally(
            conn, tasks=plan.tasks, faults=faults, taps=taps, drain_seconds=drain, feed=feed
        )
    finally:
        conn.close()


def _remove_stale_work() -> None:
    """Delete the work directories of runs whose harness is dead (SIGKILLed: no cleanup ran)."""
    for path in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        pid = path.name[len(WORK_PREFIX) :].split("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _wait_ready(host: AppHost, timeout: float = 60) -> None:
    """Wait for the host's API; if it never answers, say so with the host's last log lines."""
    try:
        wait_http(host.base + "/ready", timeout)
    except TimeoutError as exc:
        lines = [line for _, line in host.tap.lines[-40:]] if host.tap is not None else []
        tree = []
        for process in host.processes():
            with contextlib.suppress(psutil.Error):
                tree.append(" ".join(process.cmdline()))
        raise TimeoutError(
            f"{exc}\n{host.name}'s processes: {tree}\n{host.name}'s log, last lines:\n"
            + "\n".join(lines)
        ) from None


def run_hosts(plan: Plan) -> HostsAccount:
    """Build the hosts, run the plan, account; remove everything made, whatever happens."""
    remove_stale()
    _remove_stale_work()
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
    work.chmod(0o711)  # the server runs as postgres, in work/db
    net = Network()
    cluster: Cluster | None = None
    hosts: list[AppHost] = []
    try:
        net.create(["db", CUT, DELAYED, KILLED])
        (work / "db").mkdir()
        cluster = Cluster(work / "db", net.address("db"), f"{net.subnet}.0/24", net.prefix("db"))
        cluster.start()
        url = cluster.url("asynctask")
        subprocess.run([*asynctask(), "migrate"], env=env(url), check=True, capture_output=True)
        scalar(url, AUDIT_DDL + "; SELECT 1")
        config = work / "config.yaml"
        config.write_text(json.dumps(CONFIG))  # JSON is YAML
        for name in (CUT, DELAYED, KILLED):
            hosts.append(AppHost(name, net.address(name), net.prefix(name), url, config, work))
        for host in hosts:
            host.start()
        for host in hosts:
            _wait_ready(host)
        account = _flow(plan, net, url, hosts)
        account.namespaces = list(net.made)  # all removed below
        return account
    finally:
        for host in hosts:
            host.kill()
        if cluster is not None:
            cluster.stop()
        net.destroy()
        shutil.rmtree(work, ignore_errors=True)


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    """One option per field of Plan (--latency-ms for latency_ms), defaulting to the Plan's."""
    for option in fields(Plan):
        default = getattr(Plan, option.name)
        flags = [f"--{option.name.replace('_', '-')}"]
        if option.name == "tasks":
            flags.insert(0, "-n")
        parser.add_argument(
            *flags, type=type(default), default=default, help=PLAN_HELP[option.name]
        )


def main() -> None:
    """Parse the options, run the plan, print the account; exit 1 if it does not hold."""
    parser = base_parser(__doc__ or "")
    _add_plan_options(parser)
    args = parser.parse_args()
    # SIGTERM and SIGHUP unwind like Ctrl-C, through run_hosts' cleanup.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: sys.exit(128 + number))
    plan = Plan(**{option.name: getattr(args, option.name) for option in fields(Plan)})
    account = run_hosts(plan)
    print(render(account), flush=True)
    report("hosts", account.as_dict(), args.json)
    sys.exit(0 if account.ok else 1)


if __name__ == "__main__":
    main()
