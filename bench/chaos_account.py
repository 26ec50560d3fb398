"""The chaos run's account: what was created, what ran, what ran twice and why, what was lost."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg2.extensions

from bench.account import census

WORKER_KILL = "worker SIGKILL"
SUPERVISOR_KILL = "supervisor SIGKILL"
SUPERVISOR_RESTART = "supervisor restart"
DB_RESTART = "PostgreSQL restart"
UNEXPLAINED = "unexplained"

_DIED_PID = re.compile(r"\(pid (\d+)\) died while running")


@dataclass
class Event:
    """One injected fault (wall-clock seconds, so it compares with execution records)."""

    kind: str
    at: float
    until: float | None = None
    pids: list[int] = field(default_factory=list)
    held: list[list[int]] = field(default_factory=list)  # (task id, attempt) still `running`
    tasks_hit: int = 0  # of those, the ones it had started: their outcome was not recorded
    note: str = ""


@dataclass
class Account:
    """The end-of-run numbers; `ok` is false if anything was lost or left running."""

    tasks: int
    created: int
    double_inserts: int
    completed: int
    failed: int
    executions: int
    duplicates: int
    duplicate_causes: dict[str, int]
    lost: int
    stuck: int
    worker_kills: int
    kills_hit: int
    tasks_hit: int
    supervisor_kills: int
    db_restarts: int
    db_restart_note: str
    drain_seconds: float
    baseline_drain_seconds: float | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing left running."""
        return self.lost == 0 and self.stuck == 0

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json (tests/test_chaos.py reads it)."""
        unexplained = self.duplicate_causes.get(UNEXPLAINED, 0)
        return {**asdict(self), "unexplained_duplicates": unexplained, "ok": self.ok}


def tally(
    conn: psycopg2.extensions.connection,
    *,
    tasks: int,
    events: list[Event],
    lease_seconds: float,
    drain_seconds: float,
    db_restart_note: str,
) -> Account:
    """Read the final state of the scratch database and attribute every duplicate execution."""
    seen = census(conn)
    with conn.cursor() as cur:
        # The replacement names the task its predecessor was running in last_error; that is the
        # truth when the harness read the killed claims too late (already released, under load).
        cur.execute("SELECT last_error FROM tasks WHERE last_error LIKE %s", ("%died while%",))
        named = Counter(int(m) for (e,) in cur.fetchall() for m in _DIED_PID.findall(e))
    for event in events:
        event.tasks_hit = sum((t, a, p) in seen.started for t, a in event.held for p in event.pids)
        if event.kind == WORKER_KILL:
            event.tasks_hit = max(event.tasks_hit, sum(named[p] for p in event.pids))
    causes: Counter[str] = Counter()
    for history in seen.runs.values():
        for pid, at in history[:-1]:  # every run but the last one was not the one that counted
            causes[_cause(pid, at, events, lease_seconds)] += 1
    kills = [e for e in events if e.kind == WORKER_KILL]
    restarts = [e for e in events if e.kind == DB_RESTART]
    return Account(
        tasks=tasks,
        created=seen.created,
        double_inserts=seen.created - seen.keys,
        completed=seen.states.get("completed", 0),
        failed=seen.states.get("failed", 0),
        executions=seen.executions,
        duplicates=sum(causes.values()),
        duplicate_causes=dict(causes),
        lost=seen.lost(tasks),
        stuck=seen.stuck,
        worker_kills=len(kills),
        kills_hit=sum(1 for e in kills if e.tasks_hit > 0),
        tasks_hit=sum(e.tasks_hit for e in kills),
        supervisor_kills=sum(1 for e in events if e.kind == SUPERVISOR_KILL),
        db_restarts=len(restarts),
        db_restart_note=db_restart_note,
        drain_seconds=round(drain_seconds, 2),
        events=events,
    )


def _cause(pid: int, at: float, events: list[Event], lease_seconds: float) -> str:
    """Why an execution did not count: the fault that hit its process, or the one around it."""
    for event in events:
        if event.kind in (WORKER_KILL, SUPERVISOR_KILL) and pid in event.pids and at <= event.at:
            return event.kind
    for event in events:
        # An outcome buffered across the restart is refused if its lease expired meanwhile.
        end = (event.until or event.at) + lease_seconds + 1
        if event.kind == DB_RESTART and event.at - lease_seconds - 1 <= at <= end:
            return event.kind
    return UNEXPLAINED


def render(account: Account) -> str:
    """The account as the lines `bench/chaos.py` prints."""
    base = account.baseline_drain_seconds
    versus = f" (without faults: {base:.1f} s)" if base is not None else ""
    causes = ", ".join(f"{k}: {v}" for k, v in sorted(account.duplicate_causes.items())) or "none"
    lines = [
        f"tasks enqueued          {account.tasks} (half through the API, half by SQL)",
        f"tasks created           {account.created}"
        f" ({account.double_inserts} inserted twice after an unanswered request)",
        f"completed               {account.completed}",
        f"failed                  {account.failed}",
        f"executions              {account.executions}",
        f"duplicate executions    {account.duplicates} ({causes})",
        f"worker SIGKILLs         {account.worker_kills} ({account.kills_hit} hit a running task;"
        f" {account.tasks_hit} started tasks were not yet recorded)",
        f"supervisor SIGKILLs     {account.supervisor_kills} (each followed by a restart)",
        f"PostgreSQL restarts     {account.db_restarts} ({account.db_restart_note})",
        f"tasks lost              {account.lost}",
        f"tasks left running      {account.stuck}",
        f"time to drain           {account.drain_seconds:.1f} s{versus}",
        f"result                  {'OK' if account.ok else 'FAILED'}",
    ]
    return "\n".join(lines)
