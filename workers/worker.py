"""One worker process: an asyncio loop that claims, runs and acknowledges tasks of one priority.

The child side of the supervisor. Everything per-process (loop, connections, signal handlers, the
handler thread) is created here, after spawn; the supervisor passes only plain data.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
import uuid
from typing import Any

from asynctask.core import backlog, backoff, claims, queues
from asynctask.core.config import Config
from asynctask.core.errors import DatabaseUnavailable, HandlerImportError
from asynctask.core.lifecycle import Event, Outcome, decide
from asynctask.core.logs import setup_logging
from asynctask.core.loops import new_event_loop
from asynctask.core.models import CANCEL_CHANNEL
from asynctask.workers import prefetch, registry
from asynctask.workers.acks import AckBuffer
from asynctask.workers.attempt import AttemptRunner
from asynctask.workers.beat import Heartbeat, slot_status
from asynctask.workers.cancels import CancelBoard, CancelRouter
from asynctask.workers.cancels import watch as watch_cancels
from asynctask.workers.connection import QueryConnection, raise_if_cancelled
from asynctask.workers.execute import TaskExecutor
from asynctask.workers.link import SlotLink
from asynctask.workers.metrics import worker_metrics
from asynctask.workers.pause import PauseState
from asynctask.workers.plain import PlainRun
from asynctask.workers.pruner import Pruner
from asynctask.workers.recovery import release_leftovers, rescue_expired
from asynctask.workers.registry import Handler
from asynctask.workers.report import TaskReport
from asynctask.workers.scheduler import Scheduler
from asynctask.workers.slots import (
    EXIT_CONFIG_ERROR,
    EXIT_REPLACE_NOW,
    locked_by,
    slots_for,
    supervisor_alive,
    supervisor_pid,
)
from asynctask.workers.wakeup import Wakeup
from asynctask.workers.watch import Watch

log = logging.getLogger("asynctask.worker")
BEAT_SECONDS = 1.0


def run_worker(link: SlotLink, config: Config) -> None:
    """Entry point of a spawned worker process (picklable: a top-level function)."""
    from setproctitle import setproctitle

    slot = link.slot
    setproctitle(f"asynctask worker {slot.name}")
    # A spawned child starts with Python's defaults (SIGINT raises KeyboardInterrupt); the loop
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


class Worker:
    """The claim → run → acknowledge loop of one slot."""

    def __init__(self, config: Config, link: SlotLink, handlers: dict[str, Handler]) -> None:
        self.config = config
        self.link = link
        self.slot = slot = link.slot
        self.host = socket.gethostname()
        self.locked_by = locked_by(self.host, os.getpid(), slot.name)
        self.wake = asyncio.Event()
        self.attempts = AttemptRunner(config.shutdown_timeout_seconds, f"handler-{slot.name}")
        # h/run: cancels of running tasks reach a leader by NOTIFY, its siblings by its pipes.
        self.cancels = CancelBoard(self.attempts)
        self.pause = PauseState(slot.priority)
        self.wakeup = Wakeup(self.wake, link.pipes, self.cancels.request, self.pause.changed)
        self.wakeup.on_busy_due = self._rearm_soon
        self._rearming: asyncio.Task[None] | None = None
        router = CancelRouter(self.cancels, self.locked_by, slot, self.wakeup.cancel_on_sibling)
        self.conn = QueryConnection(
            str(config.database.url),
            max(config.database.connect_timeout_seconds, 30.0),
            # Only the pool's leader LISTENs; it wakes the others when it must (workers/wakeup.py).
            slot.priority if slot.index == 0 else None,
            self.wakeup.notified,
            application_name=f"asynctask worker {slot.name}",
            prepared_statements=config.database.prepared_statements,
            also={CANCEL_CHANNEL: router.notified, queues.CHANNEL: self._queue_notified},
        )
        self.stopping = False
        self.limit = 1
        self.avg_task_seconds = 0.0
        self._recovered = False
        self._batch_token: str | None = None
        self.acks = AckBuffer(self.conn, config.ack_flush_milliseconds, link.unwritten)
        self.supervisor_alive = supervisor_alive()
        report = TaskReport(slot.name, worker_metrics(config, slot.priority))
        self.executor = TaskExecutor(config, link, handlers, self.attempts, report, self.cancels)
        self.pruner = Pruner(self.conn, config.retention, slot.name)
        self.scheduler = Scheduler.for_slot(config, slot, self.conn)  # h/run: periodic tasks
        identity = (self.host, self.locked_by)
        self.heartbeat = Heartbeat(self.conn, slot, identity, self._status, self.pause)
        # One worker per supervisor, its first slot, keeps the watch (workers/watch.py).
        sentinel = slot == slots_for(config.priority_queues)[0]
        supervisor = supervisor_pid()
        self.watch = Watch(self.conn, config, self.locked_by, supervisor) if sentinel else None

    async def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name)
        background = [
            asyncio.create_task(coro)
            for coro in (
                self._beat(),
                self._housekeep(),
                self.acks.run_timer(),
                self.pruner.run(),
                watch_cancels(self.conn, self.cancels),
                self.heartbeat.run(),
                *([self.watch.run()] if self.watch is not None else []),
            )
        ]
        if self.scheduler is not None:
            background.append(asyncio.create_task(self.scheduler.run()))
        if self.conn.channel is not None:
            background.append(asyncio.create_task(self.conn.forward()))
        self.wakeup.start()
        fields = {"slot": self.slot.name, "pid": os.getpid()}
        log.info("worker %s started (%s)", self.slot.name, self.locked_by, extra=fields)
        try:
            await self._serve()
        finally:
            for task in background:
                task.cancel()
            # Bounded: a background task must never keep a stopping worker alive.
            await asyncio.wait(background, timeout=5)
            self.wakeup.close()
            if self._rearming is not None:
                self._rearming.cancel()
            await self.acks.final_flush()
            if not self.stuck:  # a stuck worker is replaced: its slot's row lives on
                await self.heartbeat.forget()
            self.conn.close()
            self.attempts.close()
        log.info("worker %s stopped", self.slot.name, extra=fields)
        return EXIT_REPLACE_NOW if self.stuck else 0

    @property
    def stuck(self) -> bool:
        """True once a handler could not be stopped: this process must be replaced."""
        return self.attempts.stuck

    def stop(self, reason: str = "stop requested") -> None:
        """Stop claiming; the running task gets `shutdown_timeout_seconds` to finish."""
        if self.stopping:
            return
        fields = {"slot": self.slot.name, "reason": reason}
        log.info("worker %s stopping (%s)", self.slot.name, reason, extra=fields)
        self.stopping = True
        self.attempts.stop_deadline = time.monotonic() + self.config.shutdown_timeout_seconds
        self.wakeup.now()

    async def _serve(self) -> None:
        failures = 0
        while not (self.stopping or self.stuck):
            try:
                if not self._recovered:
                    await release_leftovers(
                        self.conn, self.config, self.host, self.locked_by, self.link.predecessor
                    )
                    self._recovered = True
                    self.link.idle()  # recovering until now (see SlotLink.death)
                    self.heartbeat.soon()  # else the registry says "recovering" for a period
                await self._cycle()
                failures = 0
            except DatabaseUnavailable as exc:
                failures += 1
                delay = backoff.restart_delay(failures, base_ms=250, cap_ms=10_000)
                log.warning("worker %s: %s; retrying in %.1f s", self.slot.name, exc, delay)
                await self._sleep(delay)

    async def _cycle(self) -> None:
        # Flush first: "the batch is done" and "before waiting for new work" both land here.
        await self.acks.flush()
        self.wake.clear()
        if self.pause.maybe and await self._paused():
            await self._sleep(self.config.timeout_milliseconds / 1000)
            return
        began = time.monotonic()
        rows, token = await self._claim()
        if rows:
            await self._run_batch(rows, token)
            return
        if self.conn.channel is not None:  # a pool's leader: time the next task due later
            await self._arm_timer(time.monotonic() - began)
        self.wakeup.idle = True  # a leader claims a lone new task itself only while idle
        try:
            await self._sleep(self.config.timeout_milliseconds / 1000)
        finally:
            self.wakeup.idle = False

    async def _sleep(self, seconds: float) -> None:
        """Wait for a NOTIFY (or stop), at most `seconds`: the poll interval."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()

    async def _arm_timer(self, since: float) -> None:
        """Set the due timer from the due index: tasks due later than `since` seconds ago."""
        self.wakeup.timer.reading()
        due = await self.conn.run(backlog.next_due, self.slot.priority, since)
        self.wakeup.timer.set(due.due_in, due.together, due.clock)

    def _rearm_soon(self) -> None:
        # The timer fired while this leader runs a task: find the next due time meanwhile.
        if self._rearming is None or self._rearming.done():
            self._rearming = asyncio.create_task(self._rearm())

    async def _rearm(self) -> None:
        with contextlib.suppress(DatabaseUnavailable):  # the main loop reports and reconnects
            await self._arm_timer(0.0)

    async def _claim(self) -> tuple[list[dict[str, Any]], str]:
        token = str(uuid.uuid4())
        self.link.claiming()
        try:
            rows = await self.conn.run(
                claims.claim,
                priority=self.slot.priority,
                limit=self.limit,
                locked_by=self.locked_by,
                token=token,
                lease_seconds=self.config.lease_seconds,
                max_bytes=self.config.prefetch_bytes,
            )
        finally:
            self.link.idle()
        self.limit = prefetch.next_limit(
            self.limit, len(rows), self.avg_task_seconds, self.config.prefetch
        )
        return rows, token

    async def _run_batch(self, rows: list[dict[str, Any]], token: str) -> None:
        self._batch_token = token
        started, index = time.monotonic(), 0
        try:
            while index < len(rows):
                if self.stopping or self.stuck or (self.pause.maybe and await self._paused(True)):
                    await self._release(rows[index:], token)
                    break
                plain = self._plain_rows(rows, index)
                if plain:
                    run = PlainRun(self.executor, self.attempts, self._may_go_on)
                    try:
                        index += await run.run(rows[index : index + plain], token, self.acks.record)
                    finally:
                        self.link.idle()
                else:
                    await self._run_one(rows[index], token)
                    index += 1
        finally:
            self._batch_token = None
            self.avg_task_seconds = prefetch.update_average(
                self.avg_task_seconds, time.monotonic() - started, index
            )

    def _plain_rows(self, rows: list[dict[str, Any]], start: int) -> int:
        """How many rows from `start` on are for the handler thread (not a coroutine handler)."""
        count = 0
        for row in rows[start:]:
            handler = self.executor.handlers.get(row["type"])
            if handler is not None and handler.is_async:
                break
            count += 1
        return count

    def _may_go_on(self) -> bool:
        # Asked by the handler thread before each row: plain attribute reads, no await.
        return not (self.stopping or self.stuck or self.pause.maybe)

    async def _release(self, rows: list[dict[str, Any]], token: str) -> None:
        """Hand back claimed tasks that never started: their attempts are not counted."""
        outcomes = [
            Outcome(
                row["id"],
                token,
                decide(Event.NOT_STARTED, row["attempts"], row["max_attempts"], self.config.retry),
            )
            for row in rows
        ]
        try:
            released = await self.conn.run(claims.finish, outcomes)
        except DatabaseUnavailable as exc:
            log.warning("could not release %d unstarted tasks (%s)", len(rows), exc)
        else:
            fields = {"event": "released", "slot": self.slot.name, "count": released}
            log.info("released %d claimed but unstarted tasks", released, extra=fields)

    async def _run_one(self, row: dict[str, Any], token: str) -> None:
        try:
            outcome = await self.executor.run(row, token)
            if outcome is not None:  # None: cancelled meanwhile, nothing to write
                await self.acks.record(outcome)
        finally:
            self.link.idle()

    async def _paused(self, quiet: bool = False) -> bool:
        """True while this priority is paused (read again only after an announced change)."""
        try:
            return await self.pause.current(self.conn)
        except DatabaseUnavailable:
            if not quiet:
                raise
            return self.pause.paused  # mid-batch: the next cycle meets the outage

    def _queue_notified(self, payload: str) -> None:
        # A leader's LISTEN heard a pause or resume (or reconnected): tell the whole pool.
        if self.pause.heard(payload):
            self.wakeup.pool_changed()

    def _status(self) -> tuple[str, int | None]:
        return slot_status(self.link.doing, self.stopping, self.pause.paused)

    async def _beat(self) -> None:
        """Heartbeat for the supervisor's watchdog, and exit if the supervisor vanished."""
        while True:
            self.link.beat()
            if not self.supervisor_alive():
                self.stop("the supervisor is gone")
            await asyncio.sleep(BEAT_SECONDS)

    def held_tokens(self) -> list[str]:
        """Claim tokens of tasks this process still holds (running, queued, or unacknowledged)."""
        tokens = self.acks.tokens()
        if self._batch_token is not None:
            tokens.add(self._batch_token)
        return sorted(tokens)

    async def _housekeep(self) -> None:
        """Extend our leases every lease/3 and rescue expired ones every lease/2."""
        tick = self.config.lease_seconds / 6
        for n in range(1, sys.maxsize):
            await asyncio.sleep(tick)
            try:
                if n % 2 == 0 and (tokens := self.held_tokens()):
                    await self.conn.run(claims.extend_leases, tokens, self.config.lease_seconds)
                if n % 3 == 0:
                    rescued = await rescue_expired(self.conn, self.config, self.locked_by)
                    if rescued:
                        fields = {"event": "rescued", "slot": self.slot.name, "count": rescued}
                        log.warning("rescued %d tasks whose lease expired", rescued, extra=fields)
            except DatabaseUnavailable:
                raise_if_cancelled()  # else: the main loop reports it and reconnects
