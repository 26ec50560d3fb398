"""Starting asynctask's processes: migrate, the API, the workers, or all of them under one roof.

This is where the layers meet: the workers' supervisor knows nothing of the HTTP API; `run` hands
it the API as one more child (a ServiceSpec) to keep alive.
"""

from __future__ import annotations

import logging
import signal

from asynctask.core import schema
from asynctask.core.config import Config
from asynctask.core.connections import redact, with_connection
from asynctask.core.errors import ConfigError
from asynctask.core.logs import setup_logging
from asynctask.workers import registry
from asynctask.workers.budget import check_connection_budget
from asynctask.workers.children import ServiceSpec
from asynctask.workers.slots import slots_for

log = logging.getLogger("asynctask")


async def migrate(config: Config) -> None:
    """Create the database if it is missing, then apply schema.sql (idempotent)."""
    url = str(config.database.url)
    if await schema.ensure_database(url):
        log.info("created database %s", redact(url))
    await with_connection(url, config.database.connect_timeout_seconds, schema.apply_schema)
    log.info("schema applied to %s", redact(url))


def run_workers(config: Config) -> int:
    """`asynctask workers`: check handlers and the connection budget, then supervise."""
    slots = slots_for(config.priority_queues)
    if not slots:
        raise ConfigError("priority_queues: every pool is 0, so there is no worker to run")
    registry.load_handlers(config)  # fail here, once, with the config key named
    check_connection_budget(config, workers=len(slots))
    from asynctask.workers.supervisor import Supervisor  # only the commands that supervise

    return Supervisor(config, slots).run()


def run_all(config: Config, host: str, port: int) -> int:
    """`asynctask run`: the API and the workers under one supervisor."""
    slots = slots_for(config.priority_queues)
    registry.load_handlers(config)
    api_pool = config.database.pool_size * config.api.processes
    check_connection_budget(config, workers=len(slots), api_pool=api_pool)
    from asynctask.workers.supervisor import Supervisor  # only the commands that supervise

    return Supervisor(config, slots, services=api_processes(config, host, port)).run()


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
