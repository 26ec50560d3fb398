"""The SQL catalogue: every statement whole and named, and the schema agreeing with the code."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg2.extensions
import pytest

from asynctask.core import arrays, task_rows
from asynctask.core import sql as catalogue
from asynctask.core.connections import connect
from asynctask.core.models import DUE_STATES, STORED_STATES, Priority

Cursor = psycopg2.extensions.cursor
ROOT = Path(__file__).parent.parent


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_each_block_is_named_and_declares_exactly_the_parameters_it_uses() -> None:
    assert set(catalogue.QUERIES) >= {
        "claim",
        "finish",
        "insert_one",
        "reclaim_expired",
        "list_tasks",
    }
    for query in catalogue.QUERIES.values():
        used = {int(n) for n in re.findall(r"\$(\d+)", query.text)}
        assert used == set(range(1, len(query.types) + 1)), query.name
        assert not query.text.endswith(";")
    with pytest.raises(ValueError, match="declares"):
        catalogue.parse("-- name: bad\n-- params: $1 int\nSELECT $1, $2;\n")
    with pytest.raises(ValueError, match="twice"):
        catalogue.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_every_form_of_a_statement_runs(sql: Cursor) -> None:
    # What a reader pastes into psql (a PREPARE of the text), its EXECUTE, and the inline form.
    claim = catalogue.QUERIES["claim"]
    sql.execute("INSERT INTO tasks (type, priority) VALUES ('ok', 1)")
    sql.execute(claim.prepare)
    params = (1, 5, "h:1:high_1", "00000000-0000-0000-0000-000000000001", 30.0, 1 << 20)
    sql.execute(claim.execute, params)
    assert sql.fetchall()[0][0] == 1
    sql.execute("UPDATE tasks SET state = 'available'")
    sql.execute(claim.inline, catalogue.inline_params(params))
    assert len(sql.fetchall()) == 1


def test_the_claim_takes_what_the_due_index_holds(sql: Cursor) -> None:
    schema = (ROOT / "schema.sql").read_text(encoding="utf-8")
    index = re.search(r"CREATE INDEX IF NOT EXISTS tasks_due_idx(.*?);", schema, re.S)
    assert index is not None
    condition = _squash(index.group(1).split("WHERE", 1)[1])
    states = ", ".join(f"'{state}'" for state in sorted(DUE_STATES))
    assert condition == f"state IN ({states})"
    claim = _squash(catalogue.QUERIES["claim"].text)
    assert f"WHERE {condition} AND priority = $1 AND scheduled_at <= now()" in claim
    # And the planner agrees: the claim reads the index, not the table.
    sql.execute(
        "INSERT INTO tasks (type, priority) SELECT 'ok', 1 + i % 3 FROM"
        " generate_series(1, 20000) AS i"
    )
    sql.execute("ANALYZE tasks")
    params = (1, 10, "h:1:high_1", "00000000-0000-0000-0000-000000000002", 30.0, 1 << 20)
    sql.execute("EXPLAIN " + catalogue.QUERIES["claim"].inline, catalogue.inline_params(params))
    plan = "\n".join(row[0] for row in sql.fetchall())
    assert "tasks_due_idx" in plan and "Seq Scan on tasks" not in plan


def test_the_schema_names_the_same_states_and_channels_as_the_code(sql: Cursor) -> None:
    sql.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'tasks'::regclass AND pg_get_constraintdef(oid) LIKE '%state%'"
    )
    row = sql.fetchone()
    assert row is not None
    assert set(re.findall(r"'(\w+)'::text", row[0])) == set(STORED_STATES)
    for priority in Priority:
        sql.execute("SELECT asynctask_channel(%s::smallint)", (priority.number,))
        assert sql.fetchone() == (priority.channel,)


async def test_without_prepared_statements_nothing_is_prepared(database_url: str) -> None:
    conn = await connect(database_url, prepared_statements=False)
    try:
        (row,) = await task_rows.insert_task_rows(conn, [task_rows.NewRow("ok", 1, 5, "{}")])
        async with conn.cursor() as cur:
            await cur.execute("SELECT count(*) FROM pg_prepared_statements")
            assert await cur.fetchone() == (0,)
        assert (await task_rows.get_task(conn, row["id"]))["state"] == "available"
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["finish", "extend_leases", "still_held"])
def test_held_tasks_are_found_by_id_however_many_run(sql: Cursor, name: str) -> None:
    # Statistics from before anything ran (the running index looks empty), then 20,000 running
    # tasks: a plan through tasks_running_idx would read them all for every call.
    sql.execute("INSERT INTO tasks (type, priority) SELECT 'ok', 1 FROM generate_series(1, 30000)")
    sql.execute("ANALYZE tasks")
    sql.execute(
        "UPDATE tasks SET state = 'running', lock_token = gen_random_uuid(),"
        " lease_expires_at = now() + interval '1 minute' WHERE id <= 20000"
    )
    token = "00000000-0000-0000-0000-000000000003"
    ids = list(range(20001, 20101))
    params: tuple[object, ...] = {
        "finish": (
            arrays.numbers(ids),
            arrays.texts([token] * len(ids)),
            arrays.texts(["completed"] * len(ids)),
            arrays.numbers([None] * len(ids)),
            arrays.bools([False] * len(ids)),
            None,
            None,
        ),
        "extend_leases": (arrays.numbers(ids), arrays.texts([token]), 30.0),
        "still_held": (ids[0], token),
    }[name]
    query = catalogue.QUERIES[name]
    sql.execute("EXPLAIN " + query.inline, catalogue.inline_params(params))
    plan = "\n".join(row[0] for row in sql.fetchall())
    assert "tasks_pkey" in plan and "tasks_running_idx" not in plan, plan
    # And the plan PostgreSQL switches a prepared statement to after five runs (which cannot see
    # how many ids the arrays hold) is the same.
    sql.execute(query.prepare)
    sql.execute("SET plan_cache_mode = force_generic_plan")
    sql.execute("EXPLAIN " + query.execute, params)
    plan = "\n".join(row[0] for row in sql.fetchall())
    assert "tasks_pkey" in plan and "tasks_running_idx" not in plan, plan
