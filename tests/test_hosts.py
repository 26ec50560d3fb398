"""The reduced hosts run (bench/hosts.py): three hosts in network namespaces share a database
host of their own; one is cut off from it past its lease and healed, one is delayed, one is
SIGKILLed. Nothing is lost, left running or completed twice; every duplicate run is a task the
faulty host held; the cut-off host's late outcomes are refused by the claim token.

Needs root, iproute2 (`.ci/run` installs it), setpriv, and sch_netem or /dev/net/tun.
"""

from __future__ import annotations

import os

from bench.hosts import Plan, run_hosts
from bench.hosts_account import UNEXPLAINED, render
from bench.hosts_faults import HOST_KILL, PARTITION
from bench.netns import PREFIX, ip


def test_a_partition_latency_and_a_killed_host_lose_nothing() -> None:
    account = run_hosts(Plan(tasks=1200, warm=2, latency=4, gap=2, cut=12, tail=5))
    print("\n" + render(account))
    assert account.lost == 0 and account.stuck == 0
    assert account.completed == account.created  # a task inserted twice runs twice, by design
    assert account.completed_twice == 0
    causes = account.duplicate_causes
    assert causes.get(UNEXPLAINED, 0) == 0
    assert account.held_at_cut > 0 and account.held_at_kill > 0
    assert causes.get(PARTITION, 0) <= account.held_at_cut
    assert causes.get(HOST_KILL, 0) <= account.held_at_kill
    # Everything it ran from its pre-cut claims it reported after the heal, and was refused.
    assert account.late_acks_rejected >= account.cut_runs_before_heal
    assert account.ok
    assert f"{PREFIX}-{os.getpid()}-" not in ip("netns", "list")
