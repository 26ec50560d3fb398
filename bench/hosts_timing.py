"""How long each fault of the hosts harness took to be noticed and to be recovered from.

Sources, all on the harness's wall clock: the readiness probes (bench/probe.py), the arrival of
each host's log lines (bench/apphost.py), the execution records, and the harness's own polls of
what a host held (bench/hosts_faults.py). Every figure is seconds after the fault began (or,
for "after heal", after it ended); None means it did not happen while the harness looked.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.apphost import LogTap
from bench.hosts_faults import HOST_KILL, LATENCY, PARTITION, Fault
from bench.probe import Probes, Sample

RESCUED = r"rescued \d+ tasks whose lease expired"
COMPLAINT = r"could not record|LISTEN \S+ lost|retrying in|unavailable"
NOT_RECORDED = r"(\d+) of (\d+) outcomes were not recorded"


def _since(at: float | None, origin: float) -> float | None:
    return None if at is None else round(at - origin, 2)


def _first_probe(
    probes: Probes, host: str, after: float, test: Callable[[Sample], bool]
) -> float | None:
    found = probes.first(host, after, test)
    return None if found is None else found.at


def _first_rescue(taps: dict[str, LogTap], host: str, after: float) -> float | None:
    times = [t for name, tap in taps.items() if name != host if (t := tap.first(RESCUED, after))]
    return min(times, default=None)


def timings(
    fault: Fault,
    probes: Probes,
    taps: dict[str, LogTap],
    first_run_after: Callable[[str, float], float | None],
) -> dict[str, float | None]:
    """The fault's detection and recovery times (see the module docstring)."""
    if fault.kind == LATENCY:
        return _latency(fault, probes)
    if fault.kind == PARTITION:
        return _partition(fault, probes, taps, first_run_after)
    if fault.kind == HOST_KILL:
        return {
            "API refuses connections": _since(
                _first_probe(probes, fault.host, fault.start, lambda s: s.status == 0),
                fault.start,
            ),
            "first rescue by another host": _since(
                _first_rescue(taps, fault.host, fault.start), fault.start
            ),
            "all its tasks rescued": _since(fault.released, fault.start),
        }
    raise ValueError(fault.kind)


def _latency(fault: Fault, probes: Probes) -> dict[str, float | None]:
    assert fault.end is not None
    slow = fault.ms / 1000
    return {
        "/ready before (ms, median)": probes.median_ms(fault.host, fault.start - 10, fault.start),
        "/ready during (ms, median)": probes.median_ms(fault.host, fault.start, fault.end),
        "first slow /ready": _since(
            _first_probe(probes, fault.host, fault.start, lambda s: s.seconds >= slow),
            fault.start,
        ),
        "first fast /ready after removal": _since(
            _first_probe(
                probes, fault.host, fault.end, lambda s: s.status == 200 and s.seconds < slow / 2
            ),
            fault.end,
        ),
    }


def _partition(
    fault: Fault,
    probes: Probes,
    taps: dict[str, LogTap],
    first_run_after: Callable[[str, float], float | None],
) -> dict[str, float | None]:
    assert fault.end is not None
    tap = taps[fault.host]
    return {
        "its API's /ready fails": _since(
            _first_probe(probes, fault.host, fault.start, lambda s: s.status != 200), fault.start
        ),
        "its workers' first complaint": _since(tap.first(COMPLAINT, fault.start), fault.start),
        "first rescue by another host": _since(
            _first_rescue(taps, fault.host, fault.start), fault.start
        ),
        "all its tasks rescued": _since(fault.released, fault.start),
        "after heal: its /ready answers 200": _since(
            _first_probe(probes, fault.host, fault.end, lambda s: s.status == 200), fault.end
        ),
        "after heal: late acks rejected (log)": _since(
            tap.first(NOT_RECORDED, fault.end), fault.end
        ),
        "after heal: it runs a task again": _since(
            first_run_after(fault.host, fault.end), fault.end
        ),
    }
