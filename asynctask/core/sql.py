"""The SQL catalogue (queries.sql), loaded once into named Query objects.

Each block of queries.sql is one statement with `$n` parameters. A Query carries the three forms it
runs in: as written (for PREPARE), as an EXECUTE of that prepared statement, and inline for
psycopg2's client-side binding (`$n` becomes `%(n)s`), used for cold statements and wherever
prepared statements are off (transaction pooling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

_NAME = re.compile(r"^-- name: (\w+)( \(prepared\))?$")
_PARAM = re.compile(r"\$(\d+) ([\w\[\]]+)")
_PLACEHOLDER = re.compile(r"\$(\d+)")


@dataclass(frozen=True, slots=True)
class Query:
    """One named statement of the catalogue, in each form it runs in (built once, at import)."""

    name: str
    text: str  # as written in queries.sql, with $n parameters
    types: tuple[str, ...]  # of $1..$n
    prepared: bool  # a hot statement: PREPAREd once per connection unless that is turned off
    prepare: str  # PREPARE asynctask_<name> (types) AS text
    execute: str  # EXECUTE asynctask_<name> (%s, ...): the prepared form's call
    inline: str  # for psycopg2's own binding: $n -> %(n)s, a literal % doubled

    @staticmethod
    def build(name: str, text: str, types: tuple[str, ...], prepared: bool) -> Query:
        """A Query with its derived forms."""
        statement = f"asynctask_{name}"
        declared = f" ({', '.join(types)})" if types else ""
        values = f" ({', '.join(['%s'] * len(types))})" if types else ""
        return Query(
            name=name,
            text=text,
            types=types,
            prepared=prepared,
            prepare=f"PREPARE {statement}{declared} AS {text}",
            execute=f"EXECUTE {statement}{values}",
            inline=_PLACEHOLDER.sub(r"%(\1)s", text.replace("%", "%%")),
        )


def inline_params(params: tuple[Any, ...]) -> dict[str, Any]:
    """The values for a Query's `inline` form, by position ($1 is params[0])."""
    return {str(n): value for n, value in enumerate(params, start=1)}


def parse(text: str) -> dict[str, Query]:
    """Split the catalogue into its named blocks."""
    queries: dict[str, Query] = {}
    blocks = re.split(r"^(?=-- name: )", text, flags=re.M)[1:]
    for block in blocks:
        header, *lines = block.rstrip().splitlines()
        match = _NAME.match(header)
        if match is None:
            raise ValueError(f"queries.sql: bad block header {header!r}")
        name = match.group(1)
        comments = [line for line in lines if line.startswith("--")]
        body = "\n".join(line for line in lines if not line.startswith("--")).strip()
        params = " ".join(line for line in comments if line.startswith("-- params:"))
        types = tuple(kind for _, kind in sorted(_PARAM.findall(params), key=lambda p: int(p[0])))
        used = {int(n) for n in _PLACEHOLDER.findall(body)}
        if used != set(range(1, len(types) + 1)):
            raise ValueError(f"queries.sql: {name} uses ${sorted(used)} but declares {types}")
        if name in queries:
            raise ValueError(f"queries.sql: {name} is defined twice")
        queries[name] = Query.build(name, body.rstrip(";"), types, match.group(2) is not None)
    return queries


def _load() -> dict[str, Query]:
    source = resources.files("asynctask.core").joinpath("queries.sql")
    return parse(source.read_text(encoding="utf-8"))


QUERIES: Final = _load()
