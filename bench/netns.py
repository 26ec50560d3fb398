"""Network namespaces for the hosts harness: a router, one namespace per host, veth links.

Layout, with X a free 10.213.X.0/24 chosen per run:

    the harness (root namespace)  10.213.X.2    --veth--  10.213.X.1    router
    node k = 1, 2, ...            10.213.X.4k+2 --veth--  10.213.X.4k+1 router

Every node routes through the router, a namespace with forwarding on, and the faults live there:
a partition is a pair of blackhole policy rules (packets vanish, as on a dead link); latency is
bench/netdelay.py. Nothing leaves the machine: no address outside 10.213.X.0/24, no NAT, no
route to the uplink. Names carry the harness's pid, so two runs never collide and a later run
can remove what a killed one left (`remove_stale`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

PREFIX = "asynctask-hosts"
_LOCK = Path(tempfile.gettempdir()) / "asynctask-hosts.lock"
PARTITION_PREF = 100  # policy rules: partitions first, then latency (bench/netdelay.py)


def ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS`; its stdout. Raises with ip's own message when it fails and `check`."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def in_namespace(namespace: str, script: str) -> None:
    """Run a shell line inside a namespace (e.g. to write its /proc/sys/net)."""
    subprocess.run(["ip", "netns", "exec", namespace, "sh", "-c", script], check=True)


class Network:
    """The namespaces and links of one run; `destroy` removes all of them, from any state."""

    def __init__(self) -> None:
        self.run = f"{os.getpid()}-{secrets.token_hex(2)}"
        self.router = self.namespace("router")
        self.root_link = f"ath{secrets.token_hex(3)}"
        self.subnet = ""  # "10.213.X", once chosen
        self.nodes: dict[str, int] = {}  # role -> k
        self.made: list[str] = []  # namespaces created so far

    def namespace(self, role: str) -> str:
        """The namespace name of a role in this run."""
        return f"{PREFIX}-{self.run}-{role}"

    def address(self, role: str) -> str:
        """A node's address (the harness is `harness`)."""
        k = 0 if role == "harness" else self.nodes[role]
        return f"{self.subnet}.{4 * k + 2}"

    def prefix(self, role: str) -> list[str]:
        """The command prefix that runs a program inside a node's namespace."""
        return ["ip", "netns", "exec", self.namespace(role)]

    def create(self, roles: list[str]) -> None:
        """The router, the harness's link to it, and one linked namespace per role."""
        self._add_namespace(self.router)
        in_namespace(
            self.router,
            "echo 1 > /proc/sys/net/ipv4/ip_forward;"
            " echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter;"
            " echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter",
        )
        with _locked():
            self.subnet = _free_subnet()
            link = ("type", "veth", "peer", "name", "r0", "netns", self.router)
            ip("link", "add", self.root_link, *link)
            ip("addr", "add", f"{self.subnet}.2/30", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")
        self._router_side(0)
        ip("route", "add", f"{self.subnet}.0/24", "via", f"{self.subnet}.1")
        for k, role in enumerate(roles, start=1):
            self.nodes[role] = k
            namespace = self.namespace(role)
            self._add_namespace(namespace)
            link = ("type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("-n", self.router, "link", "add", f"r{k}", *link)
            self._router_side(k)
            ip("-n", namespace, "addr", "add", f"{self.address(role)}/30", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "route", "add", "default", "via", f"{self.subnet}.{4 * k + 1}")

    def _add_namespace(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        self.made.append(namespace)
        ip("-n", namespace, "link", "set", "lo", "up")

    def _router_side(self, k: int) -> None:
        ip("-n", self.router, "addr", "add", f"{self.subnet}.{4 * k + 1}/30", "dev", f"r{k}")
        ip("-n", self.router, "link", "set", f"r{k}", "up")

    def partition(self, a: str, b: str) -> None:
        """Drop every packet between two nodes, both ways, from now on."""
        for pref, (src, dst) in enumerate(((a, b), (b, a)), start=PARTITION_PREF):
            match = ("from", self.address(src), "to", self.address(dst))
            ip("-n", self.router, "rule", "add", *match, "blackhole", "pref", str(pref))

    def heal(self) -> None:
        """Remove the partition."""
        for pref in (PARTITION_PREF, PARTITION_PREF + 1):
            ip("-n", self.router, "rule", "del", "pref", str(pref), check=False)

    def destroy(self) -> None:
        """Kill whatever still runs in our namespaces, delete them and the harness's link."""
        for namespace in reversed(self.made):
            _delete_namespace(namespace)
        ip("link", "del", self.root_link, check=False)  # gone with the router already, normally
        self.made.clear()


def _free_subnet() -> str:
    """A 10.213.X prefix no address or route of the root namespace uses yet."""
    seen = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")
    free = [x for x in range(1, 255) if f"10.213.{x}." not in seen]
    if not free:
        raise RuntimeError("no free 10.213.X.0/24 left on this machine")
    return f"10.213.{random.choice(free)}"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    # Two runs starting together must not pick the same subnet between look and add.
    with _LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _delete_namespace(namespace: str) -> None:
    for pid in ip("netns", "pids", namespace, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", namespace, check=False)


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (a killed harness may not be reaped yet)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def remove_stale() -> list[str]:
    """Delete the namespaces of runs whose harness is dead (killed before it could clean up)."""
    removed = []
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX + "-"):
            continue
        pid = name[len(PREFIX) + 1 :].split("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            _delete_namespace(name)
            removed.append(name)
    return removed
