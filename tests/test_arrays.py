"""Array literals for the statements' array parameters: PostgreSQL reads back what was written."""

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


def test_numbers_uuids_and_bools(sql: Cursor) -> None:
    token = "9f0c7a4e-5b8a-4c1e-8f5e-1d2c3b4a5f60"
    sql.execute(
        "SELECT %s::bigint[], %s::float8[], %s::uuid[]::text[], %s::bool[]",
        (
            arrays.numbers([1, None, 2**62]),
            arrays.numbers([0.1, 1e-7, 12.5]),
            arrays.texts([token]),
            arrays.bools([True, False]),
        ),
    )
    assert sql.fetchone() == ([1, None, 2**62], [0.1, 1e-7, 12.5], [token], [True, False])


def test_an_array_of_nothing_but_nulls_is_sent_as_null() -> None:
    # unnest() pads a NULL array with NULLs: a batch without errors sends no errors array.
    assert arrays.texts([None, None]) is None and arrays.numbers([None]) is None
    assert arrays.texts([]) is None and arrays.bools([]) == "{}"
