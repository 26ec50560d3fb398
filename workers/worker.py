"""One worker: an asyncio loop that claims, runs and acknowledges tasks of one priority.

The claim loop lives here; a claimed batch runs in workers/batch.py, the watchdog beat and the
leases in workers/upkeep.py, and the process around it all starts in workers/process.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from asynctask.core import backlog, backoff, claims, queues
from asynctask.core.config import Config
from asynctask.core.errors import DatabaseUnavailable
from asynctask.core.models import CANCEL_CHANNEL
from asynctask.workers import prefetch, upkeep
from asynctask.workers.acks import AckBuffer
from asynctask.workers.attempt import AttemptRunner
from asynctask.workers.batch import BatchRunner
from asynctask.workers.beat import Heartbeat, slot_status
from asynctask.workers.cancels import CancelBoard, CancelRouter
from asynctask.workers.cancels import watch as watch_cancels
from asynctask.workers.connection import QueryConnection
from asynctask.workers.execute import TaskExecutor
from asynctask.workers.link import SlotLink
from asynctask.workers.metrics import worker_metrics
from asynctask.workers.pause import PauseState
from asynctask.workers.pruner import Pruner
from asynctask.workers.recovery import release_leftovers
from asynctask.workers.registry import Handler
from asynctask.workers.report import TaskReport
from asynctask.workers.scheduler import Scheduler
from asynctask.workers.slots import (
    EXIT_REPLACE_NOW,
    locked_by,
    slots_for,
    supervisor_alive,
    supervisor_pid,
)
from asynctask.workers.ticks import Ticks
from asynctask.workers.wakeup import Wakeup
from asynctask.workers.watch import Watch

log = logging.getLogger("asynctask.worker")


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
        self.conn = self._connection()
        self.stopping = False
        self.limit = 1
        self._recovered = False
        self.acks = AckBuffer(self.conn, config.ack_flush_milliseconds, link.unwritten)
        self.supervisor_alive = supervisor_alive()
        report = TaskReport(slot.name, worker_metrics(config, slot.priority))
        self.executor = TaskExecutor(config, link, handlers, self.attempts, report, self.cancels)
        self.batches = BatchRunner(
            config,
            self.conn,
            link,
            self.executor,
            self.acks,
            may_go_on=self._may_go_on,
            must_stop=self._must_stop,
        )
        self.pruner = Pruner(self.conn, config.retention, slot.name)
        self.scheduler = Scheduler.for_slot(config, slot, self.conn)  # h/run: periodic tasks
        self.ticks = Ticks()  # periodic work shares wake-ups (workers/ticks.py)
        identity = (self.host, self.locked_by)
        self.heartbeat = Heartbeat(self.conn, slot, identity, self._status, self.pause, self.ticks)
        self.watch = self._watch()

    def _watch(self) -> Watch | None:
        """One worker per supervisor, its first slot, keeps the watch (workers/watch.py)."""
        if self.slot != slots_for(self.config.priority_queues)[0]:
            return None
        return Watch(self.conn, self.config, self.locked_by, supervisor_pid(), self.ticks)

    def _connection(self) -> QueryConnection:
        slot = self.slot
        router = CancelRouter(self.cancels, self.locked_by, slot, self.wakeup.cancel_on_sibling)
        return QueryConnection(
            str(self.config.database.url),
            max(self.config.database.connect_timeout_seconds, 30.0),
            # Only the pool's leader LISTENs; it wakes the others when it must (workers/wakeup.py).
            slot.priority if slot.index == 0 else None,
            self.wakeup.notified,
            application_name=f"asynctask worker {slot.name}",
            prepared_statements=self.config.database.prepared_statements,
            also={CANCEL_CHANNEL: router.notified, queues.CHANNEL: self._queue_notified},
        )

    async def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name)
        background = [asyncio.create_task(coro) for coro in self._background()]
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

    def _background(self) -> list[Coroutine[Any, Any, None]]:
        """What runs beside the claim loop, for as long as it runs."""
        held = self.held
        coros = [
            upkeep.beat(self.link, lambda: self.supervisor_alive(), self.stop, self.ticks),
            upkeep.keep_leases(
                self.conn, self.config, self.locked_by, self.slot.name, held, self.ticks
            ),
            self.acks.run_timer(),
            self.pruner.run(),
            watch_cancels(self.conn, self.cancels, self.ticks),
            self.heartbeat.run(),
        ]
        if self.watch is not None:
            coros.append(self.watch.run())
        if self.scheduler is not None:
            coros.append(self.scheduler.run())
        if self.conn.channel is not None:
            coros.append(self.conn.forward())
        return coros

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
        if self.stopping:  # stopped during the flush: its wake-up was just cleared
            return
        if self.pause.maybe and await self._paused():
            await self._sleep_until(self.ticks.next(self.config.timeout_milliseconds / 1000))
            return
        began = time.monotonic()
        rows, token = await self._claim()
        if rows:
            await self.batches.run(rows, token)
            return
        if self.conn.channel is not None:  # a pool's leader: time the next task due later
            await self._arm_timer(time.monotonic() - began)
        self.wakeup.idle = True  # a leader claims a lone new task itself only while idle
        try:
            await self._sleep_until(self.ticks.next(self.config.timeout_milliseconds / 1000))
        finally:
            self.wakeup.idle = False

    async def _sleep(self, seconds: float) -> None:
        """Wait for a NOTIFY (or stop), at most `seconds`."""
        await self._sleep_until(asyncio.get_running_loop().time() + seconds)

    async def _sleep_until(self, when: float) -> None:
        """Wait for a NOTIFY (or stop), at most until the loop's time `when` (the next poll)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(when):
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
            self.limit, len(rows), self.batches.avg_task_seconds, self.config.prefetch
        )
        return rows, token

    def _may_go_on(self) -> bool:
        # Asked by the handler thread before each row: plain attribute reads, no await.
        return not (self.stopping or self.stuck or self.pause.maybe)

    async def _must_stop(self) -> bool:
        """Before a batch's next row: stopping, stuck, or paused (read again if announced)."""
        return self.stopping or self.stuck or (self.pause.maybe and await self._paused(True))

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

    def held(self) -> tuple[list[int], list[str]]:
        """Ids and claim tokens of tasks this process may still hold (running, queued, or
        unacknowledged; some of the batch's may be written already, which the update skips)."""
        ids, tokens = self.acks.held()
        if self.batches.token is not None:
            ids += [row["id"] for row in self.batches.rows]
            tokens.add(self.batches.token)
        return ids, sorted(tokens)
