"""The entry point of a worker process: what runs first in the child the supervisor starts.

Everything per-process (loop, connections, signal handlers, the handler thread) is created here,
after the start; the supervisor passes only the slot's link and the config.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

from asynctask.core.config import Config
from asynctask.core.errors import HandlerImportError
from asynctask.core.logs import setup_logging
from asynctask.core.loops import new_event_loop
from asynctask.workers import registry
from asynctask.workers.link import SlotLink
from asynctask.workers.slots import EXIT_CONFIG_ERROR, EXIT_REPLACE_NOW
from asynctask.workers.worker import Worker

log = logging.getLogger("asynctask.worker")


def run_worker(link: SlotLink, config: Config) -> None:
    """Entry point of a worker process (picklable: a top-level function)."""
    from setproctitle import setproctitle

    slot = link.slot
    setproctitle(f"asynctask worker {slot.name}")
    # A new child starts with Python's defaults (SIGINT raises KeyboardInterrupt); the loop
    # installs the real handlers. Until then the default action is the right one: nothing is held.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    setup_logging(config.log_level, config.log_format)
    try:
        handlers = registry.load_handlers(config)
    except HandlerImportError as exc:
        log.error("worker %s cannot start: %s", slot.name, exc)
        sys.exit(EXIT_CONFIG_ERROR)
    worker = Worker(config, link, handlers)
    gc.freeze()  # as the API does (service/app.py): full collections skip what lives forever
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        code = runner.run(worker.run())
    if code == EXIT_REPLACE_NOW:
        # A handler thread is stuck and would block interpreter exit (executor threads are
        # joined at exit); everything is flushed already, so leave without waiting for it.
        logging.shutdown()
        os._exit(code)
    if code:
        sys.exit(code)
