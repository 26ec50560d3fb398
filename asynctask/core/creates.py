"""The create path past the plain insert: unique keys, Idempotency-Key answers, batches.

A create that carries neither a unique_key nor an Idempotency-Key goes through task_rows.py's
plain statements, untouched. Otherwise `insert_unique` (queries.sql) lets the partial unique index
decide: an item whose key is held inserts nothing, and is answered with the unfinished task that
holds it, read by a statement of its own (never read-then-insert). Callers never see SQL text.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiopg
import psycopg2.errors

from asynctask.core import arrays, task_rows
from asynctask.core.connections import execute, execute_text, rows
from asynctask.core.errors import DatabaseUnavailable, IdempotencyKeyTaken
from asynctask.core.sql import QUERIES

# A held key can be freed (its task finished) between the insert and the look-up: then the item
# is inserted again. Two rounds are the most ever seen; more means the key changes hands nonstop.
MAX_ROUNDS = 10
_KEYS_PKEY = "idempotency_keys_pkey"


@dataclass(frozen=True, slots=True)
class RequestKey:
    """An Idempotency-Key as stored: per scope (API token), with the request's fingerprint."""

    scope: str
    key: str
    fingerprint: str


class Created(NamedTuple):
    """One item's answer: its task's row, its data as JSON text, and whether it was a duplicate."""

    row: dict[str, Any]
    data_json: str
    duplicate: bool


class Answer(NamedTuple):
    """The stored first answer to an Idempotency-Key."""

    fingerprint: str
    status: int
    task_ids: list[int]
    duplicates: list[int]
    live: bool


def needs_unique(tasks: Sequence[task_rows.NewRow], keys: Sequence[RequestKey | None] = ()) -> bool:
    """True when plain inserts will not do: a unique_key or an Idempotency-Key is involved."""
    return any(task.unique_key is not None for task in tasks) or any(
        key is not None for key in keys
    )


async def create(
    conn: aiopg.Connection,
    tasks: Sequence[task_rows.NewRow],
    keys: Sequence[RequestKey | None] = (),
) -> list[Created | IdempotencyKeyTaken]:
    """Insert tasks, NOTIFYing their pools at commit; per item its answer, in input order.

    `keys` (one per item, or empty) are the single creates' Idempotency-Keys: each new task's
    answer is stored with it in the same statement; a duplicate's in one of its own. An item whose
    key already has an answer gets IdempotencyKeyTaken (when that is found in the insert itself,
    every item fails with it: the caller inserts them one by one).
    """
    if not needs_unique(tasks, keys):
        found = await task_rows.insert_task_rows(conn, tasks)
        return [Created(row, task.data_json, False) for row, task in zip(found, tasks, strict=True)]
    keyed = list(keys) or [None] * len(tasks)
    created = await _insert_unique(conn, tasks, keyed)
    results: list[Created | IdempotencyKeyTaken] = list(created)
    for i, (item, key) in enumerate(zip(created, keyed, strict=True)):
        if item.duplicate and key is not None:
            try:
                await remember(conn, key, 200, [item.row["id"]])
            except IdempotencyKeyTaken as exc:
                results[i] = exc
    return results


async def create_batch(
    conn: aiopg.Connection, tasks: Sequence[task_rows.NewRow], key: RequestKey | None
) -> tuple[list[int], list[int]]:
    """The batch route: (ids in input order, indexes of the items that were duplicates).

    With an Idempotency-Key, the tasks and the answer are committed in one transaction.
    """
    if key is None:
        if not needs_unique(tasks):
            return await task_rows.insert_tasks(conn, tasks), []
        return _ids(await _insert_unique(conn, tasks, [None] * len(tasks)))
    async with transaction(conn):
        if needs_unique(tasks):
            ids, duplicates = _ids(await _insert_unique(conn, tasks, [None] * len(tasks)))
        else:
            ids, duplicates = await task_rows.insert_tasks(conn, tasks), []
        status = 200 if len(duplicates) == len(ids) else 201
        await remember(conn, key, status, ids, duplicates)
    return ids, duplicates


def _ids(created: Sequence[Created]) -> tuple[list[int], list[int]]:
    return [c.row["id"] for c in created], [i for i, c in enumerate(created) if c.duplicate]


async def _insert_unique(
    conn: aiopg.Connection, tasks: Sequence[task_rows.NewRow], keys: Sequence[RequestKey | None]
) -> list[Created]:
    result: list[Created | None] = [None] * len(tasks)
    pending = list(range(len(tasks)))
    for _ in range(MAX_ROUNDS):
        new = await _insert_round(conn, [tasks[i] for i in pending], [keys[i] for i in pending])
        holders: dict[tuple[str, str], Created] = {}
        for n, i in enumerate(pending, start=1):
            if (row := new.get(n)) is not None:
                result[i] = created = Created(row, tasks[i].data_json, False)
                if row["unique_key"] is not None:
                    holders[(row["type"], row["unique_key"])] = created
        missing = [i for i in pending if result[i] is None]
        # A key repeated in the input: its first item holds it. Else ask who does.
        asked = [_pair(tasks[i]) for i in missing if _pair(tasks[i]) not in holders]
        if asked:
            types, unique_keys = [t for t, _ in asked], [k for _, k in asked]
            for row in await rows(conn, QUERIES["find_unique"], types, unique_keys):
                data = row.pop("data")
                holders[(row["type"], row["unique_key"])] = Created(
                    task_rows.task_row(row), data, False
                )
        pending = []
        for i in missing:
            holder = holders.get(_pair(tasks[i]))
            if holder is None:
                pending.append(i)  # its holder finished meanwhile: the key is free again
            else:
                result[i] = holder._replace(duplicate=True)
        if not pending:
            return [item for item in result if item is not None]
    raise DatabaseUnavailable("a unique_key kept changing hands; try again")


async def _insert_round(
    conn: aiopg.Connection, tasks: Sequence[task_rows.NewRow], keys: Sequence[RequestKey | None]
) -> dict[int, dict[str, Any]]:
    """Insert the items whose key is free; their rows by the item's position, counted from 1."""
    try:
        found = await rows(conn, QUERIES["insert_unique"], *_columns(tasks, keys))
    except psycopg2.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == _KEYS_PKEY:
            raise IdempotencyKeyTaken("the Idempotency-Key has an answer already") from None
        raise
    return {row.pop("n"): task_rows.task_row(row) for row in found}


def _pair(task: task_rows.NewRow) -> tuple[str, str]:
    assert task.unique_key is not None  # only keyed items can be left out by the insert
    return task.type, task.unique_key


def _columns(
    tasks: Sequence[task_rows.NewRow], keys: Sequence[RequestKey | None]
) -> tuple[str | None, ...]:
    plain = task_rows.columns(tasks)
    return (
        *plain,
        arrays.texts([task.unique_key for task in tasks]),
        arrays.texts([None if key is None else key.scope for key in keys]),
        arrays.texts([None if key is None else key.key for key in keys]),
        arrays.texts([None if key is None else key.fingerprint for key in keys]),
    )


# --- Idempotency-Key answers ----------------------------------------------------------------------


async def remember(
    conn: aiopg.Connection,
    key: RequestKey,
    status: int,
    task_ids: Sequence[int],
    duplicates: Sequence[int] = (),
) -> None:
    """Store a request's answer under its key; IdempotencyKeyTaken if a twin stored one first."""
    try:
        await execute(
            conn,
            QUERIES["remember_answer"],
            key.scope,
            key.key,
            key.fingerprint,
            status,
            list(task_ids),
            list(duplicates),
        )
    except psycopg2.errors.UniqueViolation:
        raise IdempotencyKeyTaken("the Idempotency-Key has an answer already") from None


async def remembered(conn: aiopg.Connection, key: RequestKey) -> Answer | None:
    """The stored answer for this key, if any (expired or not: see `live`)."""
    found = await rows(conn, QUERIES["remembered_answer"], key.scope, key.key)
    return Answer(**found[0]) if found else None


async def forget_expired(conn: aiopg.Connection, key: RequestKey) -> None:
    """Drop this key's answer if it has expired, so the key can be used again."""
    await execute(conn, QUERIES["forget_expired_answer"], key.scope, key.key)


async def prune_keys(conn: aiopg.Connection, limit: int) -> int:
    """Delete up to `limit` expired Idempotency-Key answers; how many."""
    return await execute(conn, QUERIES["prune_idempotency_keys"], limit)


@contextlib.asynccontextmanager
async def transaction(conn: aiopg.Connection) -> AsyncIterator[None]:
    """BEGIN ... COMMIT on an (autocommit) aiopg connection; ROLLBACK on any error."""
    await execute_text(conn, "BEGIN")
    try:
        yield
    except BaseException:
        # A connection lost meanwhile has no transaction left to roll back.
        with contextlib.suppress(psycopg2.Error):
            await execute_text(conn, "ROLLBACK")
        raise
    await execute_text(conn, "COMMIT")
