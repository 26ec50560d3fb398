"""asynctask: a PostgreSQL-backed task queue service.

Handler authors import from here what a handler receives and what it may raise:
`from asynctask import Task, Retry, Cancel`. Producers import the API's client:
`from asynctask import Client` (or AsyncClient). The client is loaded on first use, so a
handler-only import pulls in neither httpx nor the server's side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from asynctask.core.control import Cancel, Retry
from asynctask.core.models import Task

if TYPE_CHECKING:
    from asynctask.client import AsyncClient, Client, TaskRecord

__all__ = ["AsyncClient", "Cancel", "Client", "Retry", "Task", "TaskRecord"]
_CLIENT_NAMES = frozenset({"AsyncClient", "Client", "TaskRecord"})


def __getattr__(name: str) -> Any:
    # PEP 562: `asynctask.Client` imports asynctask.client (and httpx) only when first asked for.
    if name in _CLIENT_NAMES:
        return getattr(importlib.import_module("asynctask.client"), name)
    raise AttributeError(f"module 'asynctask' has no attribute {name!r}")
