"""The reduced chaos run: worker and supervisor SIGKILLs lose nothing.

`python -m bench.chaos` runs as a black box on a scratch database of the tests' server; the test
reads the account it writes with --json. No PostgreSQL restart here: other tests share the
server. The full run (bench/README.md, "Chaos") adds it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from asynctask.workers.slots import supervisor_alive
from tests.processes import run_bench
from tests.procs import CTX
from tests.waiting import wait_until

# 3 worker SIGKILLs and 1 of the supervisor (then restarted), 0.4 s apart; tasks work 1-40 ms, so
# the ~8 s of work outlasts the schedule (the supervisor's restart waits for its orphans to stop
# and its new workers to connect, a few seconds): at 1-20 ms a fast run drained before its last
# kills and the account had 1 worker kill, not 3.
REDUCED = "--tasks 2000 --kills 3 --interval 0.4 --work-ms 40 --no-db-restart --no-baseline"


def test_kills_lose_nothing_and_every_duplicate_is_a_killed_attempt() -> None:
    account = run_bench("chaos", *REDUCED.split())
    assert (account["worker_kills"], account["supervisor_kills"]) == (3, 1)
    assert account["lost"] == 0 and account["stuck"] == 0
    assert account["completed"] == 2000 and account["created"] == 2000
    # A worker's SIGKILL re-runs only the task it was running: completions still in its ack buffer
    # are written by its replacement (the shared-memory mirror), so at most one duplicate per kill.
    causes = account["duplicate_causes"]
    assert causes.get("worker SIGKILL", 0) <= account["kills_hit"]
    # A supervisor's SIGKILL takes its workers with it (bench/chaos.py: 4 slots): at most one
    # duplicate per worker it had.
    assert causes.get("supervisor SIGKILL", 0) <= 4 * account["supervisor_kills"]
    assert account["duplicates"] == sum(causes.values())
    assert account["unexplained_duplicates"] == 0


def _report_spawner(path: str) -> None:
    alive = supervisor_alive()
    time.sleep(1.0)  # by now the process that spawned us has exited
    Path(path).write_text(f"{alive()} {os.getppid()}")


def _spawn_and_vanish(path: str) -> None:
    child = CTX.Process(target=_report_spawner, args=(path,))
    child.start()
    Path(path + ".parent").write_text(str(os.getpid()))
    os._exit(0)


def test_a_worker_knows_its_supervisor_even_if_it_died_during_start_up(tmp_path: Path) -> None:
    # The chaos run found it: a replacement started just before the supervisor's SIGKILL read
    # os.getppid() == 1 as its supervisor, so it never noticed it was orphaned and ran forever.
    path = str(tmp_path / "pids")
    middle = CTX.Process(target=_spawn_and_vanish, args=(path,))
    middle.start()
    middle.join(20)
    wait_until(lambda: Path(path).exists() and Path(path).read_text(), timeout=20)
    alive, ppid = Path(path).read_text().split()
    assert alive == "False"  # though re-parented: getppid() no longer names the spawner
    assert int(ppid) != int(Path(path + ".parent").read_text())
