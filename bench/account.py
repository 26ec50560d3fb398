"""What every fault benchmark reads back at the end: the tasks' states and every recorded run.

Tasks carry their key in `data->>'k'` (so a task inserted twice is seen); each execution of a
handler is a row of `executions (task_id, attempt, pid, at)` (bench/chaos_handlers.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import psycopg2.extensions


@dataclass
class Census:
    """The final tasks table and the executions, before anyone attributes a duplicate."""

    states: dict[str, int]
    created: int  # rows
    keys: int  # distinct keys among them
    completed_unrun: int  # `completed` although no execution of it was recorded
    runs: dict[int, list[tuple[int, float]]]  # task id -> (pid, at) of each execution, in order
    started: set[tuple[int, int, int]]  # (task id, attempt, pid) of each execution

    def lost(self, tasks: int) -> int:
        """Keys never created, tasks not finished, and tasks completed without ever running."""
        return (tasks - self.keys) + self.unfinished + self.completed_unrun

    @property
    def unfinished(self) -> int:
        """Tasks still due (available or retrying)."""
        return sum(self.states.get(s, 0) for s in ("available", "retrying"))

    @property
    def stuck(self) -> int:
        """Tasks left `running`."""
        return self.states.get("running", 0)

    @property
    def executions(self) -> int:
        """Handler runs recorded."""
        return sum(len(h) for h in self.runs.values())


def census(conn: psycopg2.extensions.connection) -> Census:
    """Read the tasks and executions tables of a finished run."""
    with conn.cursor() as cur:
        cur.execute("SELECT state, count(*) FROM tasks GROUP BY state")
        states: dict[str, int] = {state: int(n) for state, n in cur.fetchall()}
        cur.execute("SELECT count(*), count(DISTINCT data->>'k') FROM tasks")
        created, keys = cur.fetchone() or (0, 0)
        cur.execute(
            "SELECT count(*) FROM tasks t WHERE t.state = 'completed'"
            " AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.task_id = t.id)"
        )
        completed_unrun = int((cur.fetchone() or (0,))[0])
        cur.execute("SELECT task_id, attempt, pid, at FROM executions ORDER BY task_id, at")
        runs: dict[int, list[tuple[int, float]]] = defaultdict(list)
        started: set[tuple[int, int, int]] = set()
        for task_id, attempt, pid, at in cur.fetchall():
            runs[task_id].append((pid, at))
            started.add((task_id, attempt, pid))
    return Census(states, int(created), int(keys), completed_unrun, dict(runs), started)
