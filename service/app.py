"""The aiohttp application factory and the blocking `serve` behind `asynctask api`."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web, web_response
from aiohttp.web_runner import GracefulExit

from asynctask.core import counts, loops, stats
from asynctask.core.config import Config
from asynctask.core.connections import acquire, create_pool
from asynctask.core.exposure import allowed_hosts, check_exposure, is_loopback
from asynctask.service import (
    auth,
    create_views,
    dashboard_pages,
    dashboard_views,
    keys,
    schedule_views,
    status_views,
    task_views,
)
from asynctask.service.bodies import BodyReader
from asynctask.service.events import Broadcaster
from asynctask.service.group_commit import GroupCommit
from asynctask.service.inflight import InFlight
from asynctask.service.metrics import ApiMetrics
from asynctask.service.middlewares import error_middleware, metrics_middleware
from asynctask.service.openapi import DOCS_PATH, METRICS_PATH, SESSION_PATH, setup_openapi
from asynctask.service.rules import TaskRules
from asynctask.service.tokens import Tokens
from asynctask.service.waiters import Waiters

log = logging.getLogger("asynctask.api")

# Bounds every query of the API pool: a 10,000-task batch takes well under a second, so a statement
# still running after this long is stuck (a partitioned or overloaded server), not slow.
QUERY_TIMEOUT_SECONDS = 30.0
# Up to 19 digits (bigint's width); a longer id is no route, so a 404 before any int() of it.
_TASK_ID = r"/api/tasks/{id:[0-9]{1,19}}"
SERVER_NAME = "asynctask"  # the Server header: no versions to look up vulnerabilities by
# What pg_stat_activity shows for the API's connections (a worker's: `asynctask worker high_1`).
APPLICATION_NAME = "asynctask api"


def create_app(config: Config) -> web.Application:
    """Build the app for one configuration: routes, middlewares, pool lifetime, OpenAPI."""
    app = web.Application(
        client_max_size=config.api.max_body_bytes,
        # Outermost first: metrics see the final status of everything, 401s and errors included.
        middlewares=[metrics_middleware, error_middleware, auth.auth_middleware],
    )
    app[keys.CONFIG] = config
    app[keys.TOKENS] = Tokens(config.api)
    app[keys.RULES] = TaskRules.of(config)
    app[keys.BODIES] = BodyReader(config.api.body_timeout_seconds)
    app[keys.HOSTS] = frozenset() if config.api.tokens else allowed_hosts(config.api)
    # Every answer's Server header, the HTTP parser's own 400s included (they are sent before any
    # app code or signal runs), comes from this module global of aiohttp's.
    setattr(web_response, "SERVER_SOFTWARE", SERVER_NAME)  # noqa: B010 (not re-exported)
    app[keys.STATS] = stats.CachedStats(lambda: _read_stats(app), stats.STATS_CACHE_SECONDS)
    app[keys.METRICS] = ApiMetrics(app[keys.STATS])
    app[keys.EVENTS] = Broadcaster(app[keys.STATS])
    app[keys.IN_FLIGHT] = InFlight()
    app.cleanup_ctx.append(_pool)
    app[keys.WAITERS] = Waiters(str(config.database.url), config.database.connect_timeout_seconds)
    app.on_shutdown.append(_stop_waiting)
    app.on_shutdown.append(_end_streams)
    # allow_head=False: HEAD would repeat every GET in the document, with bodies it cannot have.
    app.router.add_get("/health", status_views.health, allow_head=False)
    app.router.add_get("/ready", status_views.ready, allow_head=False)
    app.router.add_get(METRICS_PATH, status_views.get_metrics, allow_head=False)
    app.router.add_get("/api/stats", status_views.get_stats, allow_head=False)
    app.router.add_post("/api/tasks", create_views.create_task)
    app.router.add_get("/api/tasks", task_views.list_tasks, allow_head=False)
    app.router.add_post("/api/tasks/batch", create_views.create_tasks)
    app.router.add_get(_TASK_ID, task_views.get_task, allow_head=False)
    app.router.add_post(_TASK_ID + "/cancel", task_views.cancel_task)
    app.router.add_post(_TASK_ID + "/retry", task_views.retry_task)
    app.router.add_get("/api/schedules", schedule_views.list_schedules, allow_head=False)
    _add_dashboard_routes(app)
    dashboard_pages.add_routes(app)  # no @docs: pages, not API routes, so not in the document
    setup_openapi(app, config, version=_version())
    return app


def _add_dashboard_routes(app: web.Application) -> None:
    """The routes the dashboard's pages run on (docs/dashboard-api.md)."""
    queue = "/api/queues/" + dashboard_views.PRIORITY_PATH
    app.router.add_get("/api/queues", dashboard_views.get_queues, allow_head=False)
    app.router.add_post(queue + "/pause", dashboard_views.pause_queue)
    app.router.add_post(queue + "/resume", dashboard_views.resume_queue)
    app.router.add_get("/api/workers", dashboard_views.get_workers, allow_head=False)
    app.router.add_post("/api/tasks/bulk/cancel", dashboard_views.bulk_cancel)
    app.router.add_post("/api/tasks/bulk/retry", dashboard_views.bulk_retry)
    app.router.add_get("/api/events", dashboard_views.events, allow_head=False)
    app.router.add_get(SESSION_PATH, auth.get_session, allow_head=False)
    app.router.add_post(SESSION_PATH, auth.login)
    app.router.add_delete(SESSION_PATH, auth.logout)


async def _end_streams(app: web.Application) -> None:
    # Open event streams would hold a graceful stop for its whole timeout.
    await app[keys.EVENTS].close()


async def _pool(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    url = str(config.database.url)
    app[keys.POOL] = await create_pool(
        url,
        config.database.pool_size,
        QUERY_TIMEOUT_SECONDS,
        prepared_statements=config.database.prepared_statements,
        application_name=APPLICATION_NAME,
    )
    app[keys.CREATES] = GroupCommit(app[keys.POOL], config.database.connect_timeout_seconds)
    try:
        yield
    finally:
        await app[keys.CREATES].close()
        app[keys.POOL].close()
        await app[keys.POOL].wait_closed()


async def _stop_waiting(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for running handlers: long-polls answer now, with
    # their task as it is, instead of holding a rolling restart for up to a minute.
    await app[keys.WAITERS].close()


async def _read_stats(app: web.Application) -> stats.Snapshot:
    async with acquire(app[keys.POOL], app[keys.CONFIG].database.connect_timeout_seconds) as conn:
        # Fold the count deltas first (unless a worker or another API is at it), so the read
        # sums few rows even where no worker runs.
        await counts.compact(conn)
        return await stats.read_snapshot(conn)


def _version() -> str:
    try:
        return importlib.metadata.version("asynctask")
    except importlib.metadata.PackageNotFoundError:  # run from a bare source tree
        return "0.0.0"


def serve(config: Config, host: str, port: int, reuse_port: bool = False) -> None:
    """Serve the API until SIGINT/SIGTERM (blocking); ConfigError if it may not listen there.

    `reuse_port` lets sibling API processes share the port (api.processes).
    """
    check_exposure(config.api, host)
    # The address actually listened on is the default Host name answered without tokens.
    config = replace(config, api=replace(config.api, host=host, port=port))
    app = create_app(config)
    _warn_if_open(config)
    # Everything built so far (routes, the OpenAPI document, marshmallow schemas, imported modules)
    # lives as long as the process: keep it out of the collector's full passes, which otherwise
    # stop the loop for ~16 ms every few hundred requests.
    gc.freeze()
    loop = loops.new_event_loop()
    _stop_on_first_signal(loop)
    _run(app, config, loop, reuse_port)
    _ignore_late_signals()


def _warn_if_open(config: Config) -> None:
    """Warn when the API listens beyond this machine with no token to keep anyone out."""
    if not is_loopback(config.api.host) and not config.api.tokens:
        log.warning(
            "the API listens on %s without api.tokens (api.allow_anonymous): anyone who can"
            " reach it can create and cancel tasks; keep it behind a private network",
            config.api.host,
        )


def _run(
    app: web.Application, config: Config, loop: asyncio.AbstractEventLoop, reuse_port: bool
) -> None:
    """Run the app on `loop` at config.api's host and port until it stops (blocking)."""
    host, port = config.api.host, config.api.port

    def started(_banner: str) -> None:
        # run_app calls this once the socket is bound, so the line is true when it is logged.
        shown = f"[{host}]" if ":" in host else host
        log.info("asynctask api on http://%s:%d (docs at %s)", shown, port, DOCS_PATH)

    # Access lines stay on aiohttp.access, which setup_logging keeps at WARNING: at thousands of
    # requests per second they would drown everything else.
    # keepalive_timeout also bounds the request head: aiohttp closes a connection that has not
    # sent a whole one this long after connecting or after its previous answer.
    web.run_app(
        app,
        host=host,
        port=port,
        print=started,
        loop=loop,
        # Not aiohttp's handlers: _stop_on_first_signal's, installed on the loop, stop it once.
        handle_signals=False,
        # Only when several API processes share the port: otherwise a second server started by
        # mistake must fail with "address in use", not silently take half of the connections.
        reuse_port=reuse_port,
        keepalive_timeout=config.api.idle_timeout_seconds,
    )


def _ignore_late_signals() -> None:
    """After the loop is gone, ignore SIGINT and SIGTERM for the rest of the way out."""
    # The loop is closed and its handlers gone: a signal still on its way must not kill the
    # process on its way out (exit -15 instead of 0).
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_on_first_signal(loop: asyncio.AbstractEventLoop) -> None:
    """SIGINT or SIGTERM begins the graceful shutdown once; later ones are ignored.

    Ctrl-C under `asynctask run` reaches the API twice (the terminal's SIGINT to the process group,
    then the supervisor's SIGTERM). aiohttp's own handlers would raise again in the middle of the
    shutdown the first began, or, once its cleanup removed them, let the default action kill it.
    """

    def stop() -> None:
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, _already_stopping)
        raise GracefulExit()

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop)


def _already_stopping() -> None:
    log.debug("a stop signal arrived while stopping: ignored")
