"""The connection budget: what the workers (and the API pool) need vs what the server allows.

The original's README warned that a pool smaller than the sum of workers made workers fail; here
the supervisor checks it before starting anything and refuses with both numbers.
"""

from __future__ import annotations

import asyncio

from asynctask.core import connections
from asynctask.core.config import Config
from asynctask.core.connections import redact, with_connection
from asynctask.core.errors import ConfigError

CONNECTIONS_PER_WORKER = 1  # its queries and its LISTEN share one (workers/connection.py)


def required_connections(workers: int, api_pool: int = 0) -> int:
    """Connections a deployment needs: 1 per worker process plus the API pool."""
    return CONNECTIONS_PER_WORKER * workers + api_pool


async def _server_limits(config: Config) -> tuple[int, int]:
    url, timeout = str(config.database.url), config.database.connect_timeout_seconds
    return await with_connection(url, timeout, connections.connection_limits)


def check_connection_budget(config: Config, workers: int, api_pool: int = 0) -> int:
    """Raise ConfigError if the server cannot serve that many connections; returns the need."""
    need = required_connections(workers, api_pool)
    max_connections, reserved = asyncio.run(_server_limits(config))
    available = max_connections - reserved
    if need > available:
        api = (
            f" + the API pools' {api_pool} (database.pool_size x api.processes)" if api_pool else ""
        )
        raise ConfigError(
            f"not enough database connections: {workers} worker processes (priority_queues)"
            f" need {CONNECTIONS_PER_WORKER} each = {CONNECTIONS_PER_WORKER * workers}{api},"
            f" {need} in all, but the server at {redact(str(config.database.url))} allows"
            f" {available} (max_connections {max_connections} - superuser_reserved_connections"
            f" {reserved}); lower priority_queues or database.pool_size, or raise max_connections"
        )
    return need
