"""asynctask's configuration as frozen dataclasses: every key, its default, what derives from it.

Built-in defaults live here, on the fields; config_loader.py fills a Config from config.yaml and
the environment and validates every value on the way in, so code that receives a Config trusts it:
pass it down, never re-read it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from asynctask.core.lifecycle import RetryPolicy
from asynctask.core.models import Priority
from asynctask.core.schedules import Schedule


@dataclass(frozen=True)
class DatabaseConfig:
    """Where tasks live; `url` None means the embedded server under `.asynctask/`."""

    url: str | None = None
    pool_size: int = 10
    connect_timeout_seconds: float = 5.0
    # False: no SQL-level PREPARE, for a transaction-mode pooler (PgBouncer) in front of the API.
    prepared_statements: bool = True


@dataclass(frozen=True)
class ApiConfig:
    """The HTTP API's listener and request limits."""

    host: str = "127.0.0.1"
    port: int = 4000
    processes: int = 1  # API processes sharing the port (SO_REUSEPORT), supervised
    max_body_bytes: int = 1024 * 1024
    max_data_bytes: int = 256 * 1024
    max_page_bytes: int = 1024 * 1024
    idle_timeout_seconds: float = 75.0
    body_timeout_seconds: float = 30.0
    tokens: tuple[str, ...] = ()  # every token, whatever its role
    read_tokens: tuple[str, ...] = ()  # those of them that may only read (role: read)
    allow_anonymous: bool = False
    allowed_hosts: tuple[str, ...] = ()
    public_metrics: bool = False
    # The longest a GET /api/tasks/{id}?wait_seconds= waits (keep it under a proxy's idle timeout).
    max_wait_seconds: float = 60.0


@dataclass(frozen=True)
class HandlerConfig:
    """One task type: the `module:function` that runs it and its own attempt timeout."""

    target: str
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class RetentionConfig:
    """How long finished tasks are kept; 0 keeps them forever."""

    completed_days: float = 7
    failed_days: float = 30


@dataclass(frozen=True)
class Config:
    """The whole configuration, validated; pass it down, never re-read it."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    priority_queues: Mapping[Priority, int] = field(
        default_factory=lambda: {Priority.HIGH: 4, Priority.NORMAL: 2, Priority.LOW: 1}
    )
    max_attempts: int = 5
    timeout_milliseconds: int = 1000
    handlers: Mapping[str, HandlerConfig] = field(default_factory=dict)
    retry_backoff: str = "fixed"
    retry_backoff_max_milliseconds: int = 300_000
    task_timeout_seconds: float = 300.0
    shutdown_timeout_seconds: float = 30.0
    lease_seconds: float = 30.0
    prefetch: int = 100
    prefetch_bytes: int = 4 * 1024 * 1024
    ack_flush_milliseconds: int = 5
    max_result_bytes: int = 64 * 1024
    worker_max_memory_mb: int | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_format: str = "text"
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    schedules: tuple[Schedule, ...] = ()  # periodic tasks (asynctask/core/schedules.py)

    @property
    def task_types(self) -> tuple[str, ...]:
        """The accepted task types, sorted, for messages and the OpenAPI enum."""
        return tuple(sorted(self.handlers))

    @functools.cached_property  # read for every finished attempt
    def retry(self) -> RetryPolicy:
        """How long a failed attempt waits before the next one."""
        return RetryPolicy(
            self.retry_backoff, self.timeout_milliseconds, self.retry_backoff_max_milliseconds
        )

    def timeout_for(self, task_type: str) -> float:
        """Attempt timeout of one type: its own if set, else the global one."""
        handler = self.handlers.get(task_type)
        if handler is not None and handler.timeout_seconds is not None:
            return handler.timeout_seconds
        return self.task_timeout_seconds
