"""Array literals for finish's parameters: PostgreSQL reads back exactly what was written."""

from __future__ import annotations

import psycopg2.extensions

from asynctask.core import arrays

Cursor = psycopg2.extensions.cursor
NASTY = [
    "",
    "NULL",
    "plain",
    'a "quoted" word',
    "back\\slash",
    "{braces},commas",
    " spaced ",
    "é∑😀",
]


def test_texts_come_back_as_written_with_nulls_as_nulls(sql: Cursor) -> None:
    values = [*NASTY, None, "line\nbreak\ttab"]
    sql.execute("SELECT %s::text[]", (arrays.texts(values),))
    assert sql.fetchone()[0] == values


def test_ints_words_and_bools(sql: Cursor) -> None:
    sql.execute(
        "SELECT %s::bigint[], %s::uuid[]::text[], %s::text[], %s::bool[]",
        (
            arrays.ints([1, None, 2**62]),
            arrays.words(["9f0c7a4e-5b8a-4c1e-8f5e-1d2c3b4a5f60"]),
            arrays.words(["completed", "retrying"]),
            arrays.bools([True, False]),
        ),
    )
    longs, uuids, states, flags = sql.fetchone()
    assert longs == [1, None, 2**62]
    assert uuids == ["9f0c7a4e-5b8a-4c1e-8f5e-1d2c3b4a5f60"]
    assert (states, flags) == (["completed", "retrying"], [True, False])


def test_empty_arrays() -> None:
    assert arrays.ints([]) == arrays.texts([]) == arrays.bools([]) == "{}"
