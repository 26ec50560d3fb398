"""The hosts harness's account: nothing lost or stuck, nothing completed twice, every duplicate
run traced to the host that was cut off or killed, and the late acknowledgements the claim token
turned away."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg2.extensions

from bench.account import census
from bench.apphost import AppHost, LogTap
from bench.chaos_handlers import EXECUTIONS_DDL
from bench.hosts_faults import HOST_KILL, PARTITION, Fault
from bench.hosts_timing import NOT_RECORDED

UNEXPLAINED = "unexplained"
REQUEST_TIMEOUT = 10.0  # the feeders' (bench/hosts.py)
# Every transition to `completed`, with the claim it ended: a task completed twice shows here.
AUDIT_DDL = (
    EXECUTIONS_DDL + "; ALTER TABLE executions ADD COLUMN host text;"
    " CREATE TABLE completions (task_id bigint NOT NULL, locked_by text,"
    "  at timestamptz NOT NULL DEFAULT clock_timestamp());"
    " CREATE FUNCTION bench_completed() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO completions (task_id, locked_by) VALUES (NEW.id, OLD.locked_by);"
    " RETURN NULL; END $$;"
    " CREATE TRIGGER bench_completed AFTER UPDATE OF state ON tasks FOR EACH ROW"
    "  WHEN (NEW.state = 'completed' AND OLD.state IS DISTINCT FROM 'completed')"
    "  EXECUTE FUNCTION bench_completed()"
)


@dataclass
class HostsAccount:
    """The end-of-run numbers; `ok` holds every claim the harness checks."""

    tasks: int
    created: int
    double_inserts: int
    double_insert_causes: dict[str, int]  # the fault that began just after the first insert
    completed: int
    failed: int
    executions: int
    duplicates: int
    duplicate_causes: dict[str, int]
    completed_twice: int
    completions_by_host: dict[str, int]
    lost: int
    stuck: int
    held_at_cut: int
    held_at_kill: int
    late_acks_rejected: int  # from the cut-off host's "N of M outcomes were not recorded" lines
    cut_runs_before_heal: int  # its runs of tasks it held at the cut, started before the heal
    drain_seconds: float
    feed: dict[str, int]
    faults: list[Fault] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)  # the run's, removed when it ends

    @property
    def ok(self) -> bool:
        """0 lost, 0 stuck, none completed twice, duplicates within what the faulty hosts held."""
        causes = self.duplicate_causes
        return (
            self.lost == 0
            and self.stuck == 0
            and self.completed_twice == 0
            and causes.get(UNEXPLAINED, 0) == 0
            and causes.get(PARTITION, 0) <= self.held_at_cut
            and causes.get(HOST_KILL, 0) <= self.held_at_kill
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json (tests/test_hosts.py reads it)."""
        causes = self.duplicate_causes
        return {
            **asdict(self),
            "partition_duplicates": causes.get(PARTITION, 0),
            "host_kill_duplicates": causes.get(HOST_KILL, 0),
            "unexplained_duplicates": causes.get(UNEXPLAINED, 0),
            "ok": self.ok,
        }


def load_executions(conn: psycopg2.extensions.connection, hosts: list[AppHost]) -> None:
    """Copy each host's record file (bench/chaos_handlers.py) into `executions`, with its host."""
    for host in hosts:
        if not host.record_file.exists():
            continue
        lines = host.record_file.read_text().splitlines()
        data = io.StringIO("".join(f"{line}\t{host.name}\n" for line in lines if line))
        with conn.cursor() as cur:
            cur.copy_expert(
                "COPY executions (id, task_id, attempt, pid, at, host) FROM STDIN", data
            )


def _fault(faults: list[Fault], kind: str) -> Fault | None:
    return next((f for f in faults if f.kind == kind), None)


def _scalar(conn: psycopg2.extensions.connection, sql: str, params: Any = None) -> int:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return int((cur.fetchone() or (0,))[0])


def _double_insert_causes(
    conn: psycopg2.extensions.connection, faults: list[Fault]
) -> dict[str, int]:
    """Which fault made a client repeat a create that had in fact been committed.

    The first copy was committed, then its answer was lost to a fault that began within the
    client's request timeout (REQUEST_TIMEOUT) after it.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT extract(epoch FROM min(inserted_at)), count(*) - 1 FROM tasks"
            " GROUP BY data->>'k' HAVING count(*) > 1"
        )
        repeated = [(float(at), int(extra)) for at, extra in cur.fetchall()]
    causes: Counter[str] = Counter()
    for at, extra in repeated:
        fault = next((f for f in faults if at - 1 <= f.start <= at + REQUEST_TIMEOUT), None)
        causes[fault.kind if fault else UNEXPLAINED] += extra
    return dict(causes)


def tally(
    conn: psycopg2.extensions.connection,
    *,
    tasks: int,
    faults: list[Fault],
    taps: dict[str, LogTap],
    drain_seconds: float,
    feed: dict[str, int],
) -> HostsAccount:
    """Read the final state and attribute every duplicate run to the fault whose host held it."""
    seen = census(conn)
    cut, kill = _fault(faults, PARTITION), _fault(faults, HOST_KILL)
    cut_held = set(cut.held if cut else [])
    kill_held = set(kill.held if kill else [])
    causes: Counter[str] = Counter()
    for task_id, history in seen.runs.items():
        if len(history) > 1:
            cause = (
                PARTITION if task_id in cut_held else HOST_KILL if task_id in kill_held else None
            )
            causes[cause or UNEXPLAINED] += len(history) - 1
    with conn.cursor() as cur:
        cur.execute("SELECT split_part(locked_by, ':', 1), count(*) FROM completions GROUP BY 1")
        by_host = {str(host): int(n) for host, n in cur.fetchall()}
    rejected, runs_before_heal = 0, 0
    if cut is not None:
        rejected = sum(int(m[1]) for _, m in taps[cut.host].matching(NOT_RECORDED, cut.start))
        runs_before_heal = _scalar(
            conn,
            "SELECT count(*) FROM executions WHERE host = %s AND task_id = ANY(%s) AND at < %s",
            (cut.host, sorted(cut_held), cut.end),
        )
    return HostsAccount(
        tasks=tasks,
        created=seen.created,
        double_inserts=seen.created - seen.keys,
        double_insert_causes=_double_insert_causes(conn, faults),
        completed=seen.states.get("completed", 0),
        failed=seen.states.get("failed", 0),
        executions=seen.executions,
        duplicates=sum(causes.values()),
        duplicate_causes=dict(causes),
        completed_twice=_scalar(
            conn,
            "SELECT count(*) FROM (SELECT task_id FROM completions"
            " GROUP BY task_id HAVING count(*) > 1) AS twice",
        ),
        completions_by_host=by_host,
        lost=seen.lost(tasks),
        stuck=seen.stuck,
        held_at_cut=len(cut_held),
        held_at_kill=len(kill_held),
        late_acks_rejected=rejected,
        cut_runs_before_heal=runs_before_heal,
        drain_seconds=round(drain_seconds, 2),
        feed=feed,
        faults=faults,
    )


def render(account: HostsAccount) -> str:
    """The account as `python -m bench.hosts` prints it."""
    causes = _causes(account.duplicate_causes)
    by_host = ", ".join(f"{k}: {v}" for k, v in sorted(account.completions_by_host.items()))
    feed = account.feed
    lines = [
        f"tasks enqueued          {account.tasks} (over HTTP, every host's API)",
        f"tasks created           {account.created}"
        f" ({account.double_inserts} inserted twice after an unanswered request:"
        f" {_causes(account.double_insert_causes)})",
        f"create requests         {feed['requests']} answered 201; {feed['failures']} attempts"
        f" failed; {feed['failovers']} answered by another host's API",
        f"completed               {account.completed} ({by_host})",
        f"failed                  {account.failed}",
        f"completed twice         {account.completed_twice}",
        f"executions              {account.executions}",
        f"duplicate executions    {account.duplicates} ({causes})",
        f"held by the cut host    {account.held_at_cut} tasks `running` under its name at the cut",
        f"held by the killed host {account.held_at_kill}",
        f"late acks rejected      {account.late_acks_rejected} (the cut host's outcomes the claim"
        f" token refused; it ran {account.cut_runs_before_heal} of its held tasks before the heal)",
        f"tasks lost              {account.lost}",
        f"tasks left running      {account.stuck}",
        f"time to drain           {account.drain_seconds:.1f} s",
        f"result                  {'OK' if account.ok else 'FAILED'}",
    ]
    for fault in account.faults:
        span = f"{fault.end - fault.start:.1f} s" if fault.end else "for good"
        lines.append(f"{fault.kind} on {fault.host} ({span}; {fault.how}):")
        for what, seconds in fault.timings.items():
            unit = "" if "(ms" in what else " s"
            shown = "not seen" if seconds is None else f"{seconds:g}{unit}"
            lines.append(f"    {what:<38} {shown}")
    return "\n".join(lines)


def _causes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
