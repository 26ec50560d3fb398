"""Added latency on one node's packets: `tc netem delay`, or a tun device where the kernel has none.

With sch_netem, the node's own interface gets `netem delay <ms>ms` (its egress: every packet it
sends waits). Kernels built without sch_netem (this project's VM is one) get the same effect in
the router: the node's packets are policy-routed into a tun device, and this module, run as a
process in the router's namespace (`python -m bench.netdelay DEVICE MS`), reads each packet,
holds it for MS milliseconds and writes it back, and the router forwards it on.
"""

from __future__ import annotations

import fcntl
import os
import queue
import struct
import subprocess
import sys
import threading
import time

from bench.common import ROOT
from bench.netns import Network, ip

_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_TABLE = "213"
_PREF_BACK, _PREF_INTO = "200", "201"  # after the partitions' rules (bench/netns.py)


class Latency:
    """Delay everything one node sends by `ms` milliseconds until `stop`."""

    def __init__(self, net: Network, role: str, ms: int) -> None:
        self.net, self.role, self.ms = net, role, ms
        self.process: subprocess.Popen[bytes] | None = None
        self.device = "tdelay"
        self.how = ""

    def start(self) -> None:
        """netem on the node's interface if the kernel has it, else the tun device."""
        netem = ("qdisc", "add", "dev", "eth0", "root", "netem", "delay", f"{self.ms}ms")
        try:
            subprocess.run(
                ["tc", "-n", self.net.namespace(self.role), *netem],
                check=True,
                capture_output=True,
            )
            self.how = f"tc netem delay {self.ms}ms on the host's interface"
            return
        except subprocess.CalledProcessError:
            pass  # "Specified qdisc kind is unknown": no sch_netem in this kernel
        self._start_tun()
        self.how = f"a tun device in the router holding each packet the host sends {self.ms} ms"

    def _start_tun(self) -> None:
        router = self.net.router
        command = [*self.net.prefix("router"), sys.executable, "-m", "bench.netdelay", self.device]
        self.process = subprocess.Popen(
            [*command, str(self.ms)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("bench.netdelay did not start")
        ip("-n", router, "link", "set", self.device, "up")
        ip("-n", router, "route", "add", "default", "dev", self.device, "table", _TABLE)
        # What comes back out of the device goes on as usual; what the node sends goes in.
        ip("-n", router, "rule", "add", "iif", self.device, "lookup", "main", "pref", _PREF_BACK)
        source = self.net.address(self.role)
        ip("-n", router, "rule", "add", "from", source, "lookup", _TABLE, "pref", _PREF_INTO)

    def stop(self) -> None:
        """Back to no added latency."""
        if self.process is None:
            subprocess.run(
                ["tc", "-n", self.net.namespace(self.role), "qdisc", "del", "dev", "eth0", "root"],
                check=False,
                capture_output=True,
            )
            return
        router = self.net.router
        for pref in (_PREF_INTO, _PREF_BACK):
            ip("-n", router, "rule", "del", "pref", pref, check=False)
        self.process.kill()  # the device goes with its file descriptor, and its route with it
        self.process.wait()
        self.process = None


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def hold(fd: int, seconds: float) -> None:
    """Read packets from the tun device and write each back `seconds` after it came (forever)."""
    held: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def read() -> None:
        while True:
            packet = os.read(fd, 65536)
            held.put((time.monotonic() + seconds, packet))

    threading.Thread(target=read, daemon=True).start()
    while True:
        due, packet = held.get()
        time.sleep(max(0.0, due - time.monotonic()))
        os.write(fd, packet)  # a constant delay keeps the packets in order


def main() -> None:
    """`python -m bench.netdelay DEVICE MS`: create the device, say "ready", delay until killed."""
    device, ms = sys.argv[1], float(sys.argv[2])
    fd = _open_tun(device)
    print("ready", flush=True)
    hold(fd, ms / 1000)


if __name__ == "__main__":
    main()
