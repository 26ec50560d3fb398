"""bench.worker_profile, reduced: one profiled worker drains a small load and reports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_profiled_worker_drains_its_load_and_prints_the_profile() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker_profile", "--tasks", "300", "--top", "200"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "worker_profile: tasks=300 " in done.stdout
    # The profile covers the whole drain: every task went through the executor once.
    prepared = [
        line for line in done.stdout.splitlines() if "execute.py" in line and "(prepare)" in line
    ]
    assert len(prepared) == 1 and prepared[0].split()[0] == "300"
