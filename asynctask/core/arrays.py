"""PostgreSQL array literals (`{1,2,NULL}`) built in Python, for the statements that take arrays.

psycopg2 adapts a Python list element by element into `ARRAY[...]` (each element quoted by its own
adapter object): for `finish`'s seven arrays of 100 outcomes that took 1.3 ms of a worker's CPU per
statement, a third of a no-op task's cost, and the server then parsed 700 constants. One string per
array, cast by the statement (`$1::bigint[]`), costs the worker ~0.1 ms and the server one literal.
"""

from __future__ import annotations

from collections.abc import Iterable


def ints(values: Iterable[int | None]) -> str:
    """An int array literal; None is NULL."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def words(values: Iterable[str]) -> str:
    """A literal of plain words (uuids, state names), unquoted: none may hold `{},"\\` or space."""
    return "{" + ",".join(values) + "}"


def bools(values: Iterable[bool]) -> str:
    """A boolean array literal."""
    return "{" + ",".join("t" if v else "f" for v in values) + "}"


def texts(values: Iterable[str | None]) -> str:
    """A text array literal of any strings, each double-quoted (`\\`, `"` escaped); None: NULL."""
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
