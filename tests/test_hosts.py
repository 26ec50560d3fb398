"""The reduced hosts run: three hosts in network namespaces share a database host of their own;
one is cut off from it past its lease and healed, one is delayed, one is SIGKILLed. Nothing is
lost, left running or completed twice; every duplicate run is a task the faulty host held; the
cut-off host's late outcomes are refused by the claim token.

`python -m bench.hosts` runs as a black box with a shorter plan; the test reads the account it
writes with --json. Needs root, iproute2 (`.ci/run` installs it), setpriv, and sch_netem or
/dev/net/tun.
"""

from __future__ import annotations

import subprocess

from tests.processes import run_bench

# Seconds: 2 of load, 4 of latency on app2, 2, 12 cut off (past the 5 s lease), 2, app3 killed, 5.
REDUCED = "--tasks 1200 --warm 2 --latency 4 --gap 2 --cut 12 --tail 10"


def test_a_partition_latency_and_a_killed_host_lose_nothing() -> None:
    account = run_bench("hosts", *REDUCED.split())
    assert account["lost"] == 0 and account["stuck"] == 0
    assert account["completed"] == account["created"]  # a task inserted twice runs twice, by design
    assert account["completed_twice"] == 0
    assert account["unexplained_duplicates"] == 0
    assert account["held_at_cut"] > 0 and account["held_at_kill"] > 0
    assert account["partition_duplicates"] <= account["held_at_cut"]
    assert account["host_kill_duplicates"] <= account["held_at_kill"]
    # Everything it ran from its pre-cut claims it reported after the heal, and was refused.
    assert account["late_acks_rejected"] >= account["cut_runs_before_heal"]
    assert account["ok"] is True
    # Every namespace the run made is gone.
    made = set(account["namespaces"])
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert made, "the run named no namespace"
    assert not made & {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
