"""Starting asynctask's processes: migrate, the API, the workers, or all of them under one roof.

This is where the layers meet: the workers' supervisor knows nothing of the HTTP API; `run` hands
it the API as one more child (a ServiceSpec) to keep alive.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

from asynctask.core import schema, upkeep
from asynctask.core.config import Config
from asynctask.core.connections import redact, with_connection
from asynctask.core.errors import AsyncTaskError, ConfigError
from asynctask.core.logs import setup_logging
from asynctask.workers import registry
from asynctask.workers.budget import check_connection_budget
from asynctask.workers.children import ServiceSpec
from asynctask.workers.slots import Slot, slots_for

log = logging.getLogger("asynctask")
# The autovacuum check at start must not hold up a start against a slow server for long.
VACUUM_CHECK_TIMEOUT_SECONDS = 2.0


async def migrate(config: Config) -> None:
    """Create the database if it is missing, then apply schema.sql (idempotent)."""
    url = str(config.database.url)
    if await schema.ensure_database(url):
        log.info("created database %s", redact(url))
    await with_connection(url, config.database.connect_timeout_seconds, schema.apply_schema)
    log.info("schema applied to %s", redact(url))


def autovacuum_warning(settings: Mapping[str, str]) -> str | None:
    """The start-up warning for a server that does not vacuum by itself, or None if it does."""
    # A setting we could not read counts as on: warn only about what the server says.
    off = [name for name in ("autovacuum", "track_counts") if settings.get(name, "on") != "on"]
    if not off:
        return None
    return (
        f"the database server runs with {' and '.join(f'{name} = off' for name in off)}:"
        " nothing vacuums the tasks table, and a queue table without vacuum bloats (every task"
        " leaves dead row versions); set autovacuum = on (and track_counts = on) on the server"
    )


def warn_without_autovacuum(config: Config) -> None:
    """Log one WARNING at start when the server has autovacuum off."""
    url = str(config.database.url)
    timeout = min(config.database.connect_timeout_seconds, VACUUM_CHECK_TIMEOUT_SECONDS)
    try:
        settings = asyncio.run(with_connection(url, timeout, upkeep.vacuum_settings))
    except AsyncTaskError:
        return  # an unreachable server is the command's own business (it reports or rides it out)
    message = autovacuum_warning(settings)
    if message:
        log.warning("%s", message)


def run_workers(config: Config) -> int:
    """`asynctask workers`: check handlers and the connection budget, then supervise."""
    slots = slots_for(config.priority_queues)
    if not slots:
        raise ConfigError("priority_queues: every pool is 0, so there is no worker to run")
    return _supervise(config, slots, workers=len(slots))


def run_all(config: Config, host: str, port: int) -> int:
    """`asynctask run`: the API and the workers under one supervisor."""
    slots = slots_for(config.priority_queues)
    api_pool = config.database.pool_size * config.api.processes
    services = api_processes(config, host, port)
    return _supervise(config, slots, workers=len(slots), api_pool=api_pool, services=services)


def _supervise(
    config: Config,
    slots: list[Slot],
    *,
    workers: int,
    api_pool: int = 0,
    services: list[ServiceSpec] | None = None,
) -> int:
    from asynctask.workers.supervisor import Supervisor  # only the commands that supervise

    # Built before the handlers are imported here: building it forks the workers' fork server,
    # and no worker may inherit what a handler module did at import (a thread, a socket).
    supervisor = Supervisor(config, slots, services=services or ())
    try:
        registry.load_handlers(config)  # fail here, once, with the config key named
        check_connection_budget(config, workers=workers, api_pool=api_pool)
    except BaseException:
        supervisor.close()
        raise
    return supervisor.run()


def run_api_processes(config: Config, host: str, port: int) -> int:
    """`asynctask api` with api.processes > 1: that many API processes, supervised."""
    api_pool = config.database.pool_size * config.api.processes
    check_connection_budget(config, workers=0, api_pool=api_pool)
    from asynctask.workers.supervisor import Supervisor

    return Supervisor(config, [], services=api_processes(config, host, port)).run()


def api_processes(config: Config, host: str, port: int) -> list[ServiceSpec]:
    """The API's children: `api`, or api_1..api_N sharing the port when api.processes is N."""
    count = config.api.processes
    if count == 1:
        return [ServiceSpec("api", run_api, (config, host, port, "api", False))]
    return [
        ServiceSpec(f"api_{n}", run_api, (config, host, port, f"api_{n}", True))
        for n in range(1, count + 1)
    ]


def run_api(config: Config, host: str, port: int, name: str = "api", shared: bool = False) -> None:
    """Entry point of an API process under the supervisor (spawned)."""
    from setproctitle import setproctitle

    from asynctask.service.app import serve

    setproctitle(f"asynctask {name}")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    setup_logging(config.log_level, config.log_format)
    serve(config, host, port, reuse_port=shared)
