"""The routes that create tasks: POST /api/tasks (one) and POST /api/tasks/batch (up to 10,000).

Thin like every view: check the body (service/rules.py), insert (service/group_commit.py, or the
core's batch insert), serialize; a held unique_key answers 200 with its task, a repeated
Idempotency-Key the first answer again. Errors are raised, not answered: the middlewares answer
them.
"""

from __future__ import annotations

from aiohttp import web

from asynctask.core import creates
from asynctask.core.connections import acquire
from asynctask.service import idempotency, keys
from asynctask.service.create_schemas import BatchCreatedSchema, TaskBatchSchema, TaskCreateSchema
from asynctask.service.openapi import (
    BATCH_DUPLICATES,
    CREATE_DESCRIPTIONS,
    CREATE_ERRORS,
    CREATED_HEADERS,
    DUPLICATE_ANSWER,
    IDEMPOTENCY_KEY,
    REPLAY_HEADERS,
    body,
    operation,
)
from asynctask.service.task_schemas import TaskSchema


@operation(
    "Create a task",
    (201, TaskSchema, "The new task."),
    CREATE_ERRORS,
    headers=CREATED_HEADERS,
    also=((200, TaskSchema, DUPLICATE_ANSWER, CREATED_HEADERS),),
    parameters=(IDEMPOTENCY_KEY,),
    descriptions=CREATE_DESCRIPTIONS,
)
@body(TaskCreateSchema)
async def create_task(request: web.Request) -> web.Response:
    """POST /api/tasks: insert one task (and NOTIFY its priority), committed before the 201.

    200 with the holder when its unique_key is taken; the first answer again for a repeated
    Idempotency-Key.
    """
    task = await request.app[keys.BODIES].load(request, request.app[keys.RULES].one)
    key = idempotency.request_key(request, await request.read())
    if key is None:  # the hot path: nothing to replay
        created = await request.app[keys.CREATES].create(task)
    else:
        answer = await idempotency.first_answer(
            request, key, lambda: request.app[keys.CREATES].create(task, key), single=True
        )
        if isinstance(answer, web.Response):
            return answer
        created = answer
    if not created.duplicate:
        request.app[keys.METRICS].tasks_created((task.priority,))
    return idempotency.task_answer(created.row, created.data_json, created.duplicate)


@operation(
    "Create up to 10,000 tasks at once",
    (201, BatchCreatedSchema, "Ids in order."),
    CREATE_ERRORS,
    headers=REPLAY_HEADERS,
    also=((200, BatchCreatedSchema, BATCH_DUPLICATES, REPLAY_HEADERS),),
    parameters=(IDEMPOTENCY_KEY,),
    descriptions=CREATE_DESCRIPTIONS,
)
@body(TaskBatchSchema)
async def create_tasks(request: web.Request) -> web.Response:
    """POST /api/tasks/batch: validate every item, then insert all in one statement."""
    tasks = await request.app[keys.BODIES].load(request, request.app[keys.RULES].batch)
    key = idempotency.request_key(request, await request.read())

    async def insert() -> tuple[list[int], list[int]]:
        timeout = request.app[keys.CONFIG].database.connect_timeout_seconds
        async with acquire(request.app[keys.POOL], timeout) as conn:
            return await creates.create_batch(conn, [task.row() for task in tasks], key)

    created = await idempotency.first_answer(request, key, insert, single=False)
    if isinstance(created, web.Response):
        return created
    ids, duplicates = created
    skip = set(duplicates)
    request.app[keys.METRICS].tasks_created(
        task.priority for i, task in enumerate(tasks) if i not in skip
    )
    every = len(duplicates) == len(ids)
    headers = {idempotency.DUPLICATE: "true"} if every else None
    body = {"ids": ids, "duplicates": duplicates}
    return web.json_response(body, status=200 if every else 201, headers=headers)
