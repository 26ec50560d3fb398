"""The soak's series as PNG charts (matplotlib, from the `bench` extra): latency, queue, sizes,
processes. Reads the samples as --json writes them, so a run can be redrawn later:
`python -m bench.soak_charts RESULT.json DIR`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

MIB = 2**20


def draw(result: dict[str, Any], directory: Path) -> list[Path]:
    """Write latency.png, queue.png, size.png and processes.png; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    samples = result["samples"]
    minutes = [s["t"] / 60 for s in samples]
    title = (
        f"{result['minutes']:g} min, {result['achieved_rate']:.0f} creates/s of"
        f" {result['rate']:.0f} asked (capacity {result['capacity']:.0f}/s),"
        f" retention {result['retention_minutes']:g} min"
    )
    paths = []
    for name, painter in (
        ("latency", _latency),
        ("queue", _queue),
        ("size", _size),
        ("processes", _processes),
    ):
        figure, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
        painter(axes, minutes, samples)
        axes[-1].set_xlabel("minutes")
        figure.suptitle(f"soak: {name} — {title}", fontsize=10)
        figure.tight_layout()
        path = directory / f"{name}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        paths.append(path)
    return paths


def _series(samples: Sequence[dict[str, Any]], key: str) -> list[Any]:
    return [s[key] for s in samples]


def _latency(axes: Sequence[Axes], minutes: list[float], samples: list[dict[str, Any]]) -> None:
    top, bottom = axes
    top.plot(minutes, _series(samples, "p99_ms"), label="p99", color="tab:red")
    top.plot(minutes, _series(samples, "p50_ms"), label="p50", color="tab:blue")
    post = _series(samples, "post_p99_ms")
    top.plot(minutes, post, label="POST answered, p99", color="tab:orange", lw=0.8, ls="--")
    top.set_ylabel("create → completed (ms)")
    top.set_ylim(bottom=0)
    top.legend(loc="upper left")
    # The machine is shared: what else ran shows as the gap between the two lines.
    machine = _series(samples, "machine_cpu_percent")
    ours = [sum(s["cpu_percent"].values()) for s in samples]
    bottom.plot(minutes, machine, label="whole machine", color="gray")
    bottom.plot(minutes, ours, label="the soak (asynctask, PostgreSQL, load)", color="tab:green")
    bottom.set_ylabel("CPU (% of one core)")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left")


def _queue(axes: Sequence[Axes], minutes: list[float], samples: list[dict[str, Any]]) -> None:
    top, bottom = axes
    widths = [b - a for a, b in zip([0.0, *minutes], minutes, strict=False)]
    for key, label in (("creates", "created"), ("finished", "completed")):
        counts = _series(samples, key)
        rates = [n / (w * 60) if w else 0 for n, w in zip(counts, widths, strict=True)]
        top.plot(minutes, rates, label=f"{label} per s")
    top.set_ylabel("tasks/s")
    top.set_ylim(bottom=0)
    top.legend(loc="lower right")
    bottom.plot(minutes, _series(samples, "due"), label="due (available + retrying)")
    bottom.plot(minutes, _series(samples, "running"), label="running")
    bottom.set_ylabel("queue depth (tasks)")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left")


def _size(axes: Sequence[Axes], minutes: list[float], samples: list[dict[str, Any]]) -> None:
    top, bottom = axes
    top.plot(minutes, [s["total_bytes"] / MIB for s in samples], label="table + indexes", lw=2)
    top.plot(minutes, [s["heap_bytes"] / MIB for s in samples], label="table (heap)")
    for index in sorted(samples[-1]["index_bytes"]):
        sizes = [s["index_bytes"].get(index, 0) / MIB for s in samples]
        top.plot(minutes, sizes, label=index, lw=1)
    top.set_ylabel("MiB")
    top.set_ylim(bottom=0)
    top.legend(loc="upper left", fontsize=8)
    bottom.plot(minutes, _series(samples, "dead_tuples"), label="dead tuples", color="tab:red")
    bottom.plot(minutes, _series(samples, "live_tuples"), label="live tuples", color="tab:green")
    bottom.plot(minutes, _series(samples, "rows"), label="rows counted", color="black", lw=0.8)
    runs = _series(samples, "autovacuums")
    for minute, before, after in zip(minutes[1:], runs, runs[1:], strict=False):
        if after > before:
            bottom.axvline(minute, color="gray", lw=0.5, ls=":")
    bottom.set_ylabel("tuples (dotted: autovacuum ran)")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left", fontsize=8)


def _processes(axes: Sequence[Axes], minutes: list[float], samples: list[dict[str, Any]]) -> None:
    top, bottom = axes
    names = sorted(set(samples[-1]["rss_bytes"]) | set(samples[-1]["cpu_percent"]))
    colors = {name: plt.get_cmap("tab20")(i % 20) for i, name in enumerate(names)}
    for name in samples[-1]["rss_bytes"]:
        rss = [s["rss_bytes"].get(name, 0) / MIB for s in samples]
        top.plot(minutes, rss, label=name, lw=1, color=colors[name])
    top.set_ylabel("RSS (MiB)")
    top.set_ylim(bottom=0)
    top.legend(loc="lower right", fontsize=7, ncol=4)
    for name in samples[-1]["cpu_percent"]:
        cpu = [s["cpu_percent"].get(name) for s in samples]
        # The groups (all of PostgreSQL, the load generator) are not asynctask processes.
        wide = name not in samples[-1]["rss_bytes"]
        bottom.plot(minutes, cpu, label=name, lw=2 if wide else 0.8, color=colors[name])
    bottom.set_ylabel("CPU (% of one core)")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left", fontsize=7, ncol=4)


def main(argv: Sequence[str] | None = None) -> None:
    """Redraw the charts of a --json result: RESULT.json DIR."""
    args = list(sys.argv[1:] if argv is None else argv)
    for path in draw(json.loads(Path(args[0]).read_text()), Path(args[1])):
        print(path)


if __name__ == "__main__":
    main()
