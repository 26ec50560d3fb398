"""`asynctask migrate` on a database made by the schema before issue 13, with tasks in it."""

from __future__ import annotations

import psycopg2.extensions

from asynctask.core import schema
from asynctask.core.connections import connect
from asynctask.core.models import STORED_STATES
from tests.test_worker import fetch

Cursor = psycopg2.extensions.cursor
# What issue 13 added to schema.sql; without it, the database is as the previous schema made it.
ISSUE_13 = """
DROP FUNCTION asynctask_enqueue(text, jsonb, text, timestamptz, text, integer);
DROP TABLE idempotency_keys;
DROP INDEX tasks_unique_key_idx;
ALTER TABLE tasks DROP COLUMN unique_key;
DROP FUNCTION asynctask_state(text, timestamptz);
DROP FUNCTION asynctask_at(timestamptz, text);
"""


async def test_migrate_upgrades_a_database_with_tasks_in_every_state(
    database_url: str, sql: Cursor
) -> None:
    sql.execute(ISSUE_13)
    for state in STORED_STATES:
        sql.execute(
            "INSERT INTO tasks (type, state, scheduled_at)"
            " VALUES ('ok', %s, now() + interval '1 hour')",
            (state,),
        )
    sql.execute("SELECT id, state FROM tasks ORDER BY id")
    before = sql.fetchall()
    conn = await connect(database_url)
    try:
        await schema.apply_schema(conn)
        await schema.apply_schema(conn)  # and again: nothing changes
    finally:
        conn.close()
    sql.execute("SELECT id, state, unique_key FROM tasks ORDER BY id")
    assert sql.fetchall() == [(i, state, None) for i, state in before]
    sql.execute("SELECT asynctask_state(state, scheduled_at) FROM tasks WHERE state = 'available'")
    assert fetch(sql) == ("scheduled",)
    sql.execute("SELECT asynctask_enqueue('ok', unique_key => 'k')")
    (new_id,) = fetch(sql)
    sql.execute("SELECT asynctask_enqueue('ok', unique_key => 'k')")
    assert fetch(sql) == (new_id,)
    sql.execute("SELECT count(*) FROM idempotency_keys")
    assert fetch(sql) == (0,)
