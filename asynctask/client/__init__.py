"""The Python client of the asynctask API: Client (sync) and AsyncClient, on httpx.

from asynctask import Client
with Client() as client:            # ASYNCTASK_URL / ASYNCTASK_TOKEN, or arguments
    task = client.create("report", {"month": "2024-05"}, priority="high")
    done = client.wait(task.id, timeout=60)
"""

from asynctask.client.aio import AsyncClient
from asynctask.client.calls import BATCH_LIMIT, DEFAULT_URL, WAIT_MAX_SECONDS, new_task
from asynctask.client.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PartialBatchError,
    PayloadTooLargeError,
    ServerError,
    UnavailableError,
    ValidationError,
    WaitTimeoutError,
)
from asynctask.client.records import TaskRecord
from asynctask.client.sync import Client

__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_URL",
    "WAIT_MAX_SECONDS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "NotFoundError",
    "PartialBatchError",
    "PayloadTooLargeError",
    "ServerError",
    "TaskRecord",
    "UnavailableError",
    "ValidationError",
    "WaitTimeoutError",
    "new_task",
]
