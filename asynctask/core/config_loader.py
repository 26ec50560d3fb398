"""Load and validate asynctask's configuration once, into config.py's frozen dataclasses.

Layering: built-in defaults < config.yaml < environment (`DATABASE_URL`, `ASYNCTASK_*`).
Every error names the key (and the environment variable, when that is where the value came from),
the value, and what is allowed, in one line.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from asynctask.core import checks
from asynctask.core.config import ApiConfig, Config, DatabaseConfig, HandlerConfig, RetentionConfig
from asynctask.core.errors import ConfigError
from asynctask.core.models import PRIORITIES, TYPE_PATTERN, Priority
from asynctask.core.schedules import Schedule, parse_schedules

RETRY_BACKOFFS: tuple[str, ...] = ("fixed", "exponential")
LOG_FORMATS: tuple[str, ...] = ("text", "json")
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TYPE_NAME = re.compile(TYPE_PATTERN)

# Every scalar key: dotted path -> checker. The environment variable of a key is ASYNCTASK_ plus the
# path upper-cased with dots as underscores (api.port -> ASYNCTASK_API_PORT).
_SCALARS: dict[str, checks.Check] = {
    "database.url": checks.optional(checks.database_url),
    "database.pool_size": checks.integer(1, 1000),
    "database.connect_timeout_seconds": checks.number(0, 600),
    "database.prepared_statements": checks.boolean,
    "api.host": checks.text,
    "api.port": checks.integer(1, 65535, "a TCP port from 1 to 65535"),
    "api.processes": checks.integer(1, 64),
    "api.max_body_bytes": checks.integer(1024, 1024**3),
    "api.max_data_bytes": checks.integer(16, 1024**3),
    "api.max_page_bytes": checks.integer(1024, 1024**3),
    "api.idle_timeout_seconds": checks.number(0, 86_400),
    "api.body_timeout_seconds": checks.number(0, 86_400),
    "api.tokens": checks.tokens,
    "api.allow_anonymous": checks.boolean,
    "api.allowed_hosts": checks.host_names,
    "api.public_metrics": checks.boolean,
    "api.max_wait_seconds": checks.number(0, 60),
    "max_attempts": checks.integer(1),
    "timeout_milliseconds": checks.integer(1, 86_400_000),
    "retry_backoff": checks.choice(RETRY_BACKOFFS),
    "retry_backoff_max_milliseconds": checks.integer(1, 2_592_000_000 // 1000 * 1000),
    "task_timeout_seconds": checks.number(0, 604_800),
    "shutdown_timeout_seconds": checks.number(0, 86_400),
    "lease_seconds": checks.number(1, 86_400),
    "prefetch": checks.integer(1, 1000),
    "prefetch_bytes": checks.integer(1024, 1024**3),
    "ack_flush_milliseconds": checks.integer(0, 10_000),
    "max_result_bytes": checks.integer(1, 16 * 1024**2),
    "worker_max_memory_mb": checks.optional(checks.integer(16, 1_048_576)),
    "metrics_port": checks.optional(checks.integer(1, 65535, "a TCP port from 1 to 65535")),
    "metrics_host": checks.text,
    "log_level": checks.choice(LOG_LEVELS, upper=True),
    "log_format": checks.choice(LOG_FORMATS),
    "retention.completed_days": checks.days,
    "retention.failed_days": checks.days,
}
for _priority in PRIORITIES:
    _SCALARS[f"priority_queues.{_priority}"] = checks.integer(
        0, 256, "0 or more workers, at most 256"
    )
_SECTIONS = {"database", "api", "priority_queues", "retention"}
# Lists from the environment: a variable with no items (empty, blanks, commas) counts as unset, so
# an empty value a template filled in (compose's `${VAR:-}`, an empty Secret) can never replace
# the file's tokens with none.
_LISTS = ("api.tokens", "api.allowed_hosts")


def env_name(key: str) -> str:
    """The environment variable that overrides a dotted config key."""
    return "ASYNCTASK_" + key.replace(".", "_").upper()


def default_config_path(environ: Mapping[str, str]) -> Path:
    """`$ASYNCTASK_CONFIG`, else `./config.yaml`."""
    return Path(environ.get("ASYNCTASK_CONFIG", "config.yaml"))


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply the environment, validate, and freeze."""
    environ = os.environ if environ is None else environ
    path = default_config_path(environ) if path is None else path
    raw = _read_yaml(path) if path.exists() else _packaged_default(path, environ)
    return parse_config(raw, environ)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        # The problem and its place, never PyYAML's copy of the line: it may hold a token.
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: cannot be read as YAML ({exc.problem}{where})") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        kind = type(loaded).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a {kind}")
    return loaded


def _packaged_default(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    # An explicitly named file that does not exist is an error; the implicit ./config.yaml falls
    # back to the copy shipped inside the package, so an installed wheel runs anywhere.
    if "ASYNCTASK_CONFIG" in environ or path != Path("config.yaml"):
        raise ConfigError(f"config file {path} does not exist")
    return _read_yaml(Path(__file__).with_name("default_config.yaml"))


def parse_config(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Validate a raw mapping (file contents) plus environment overrides into a Config."""
    flat = _flatten(raw)
    handlers = _parse_handlers(raw.get("handlers") or {})
    for key in _SCALARS:
        name = env_name(key)
        if name in environ and not (key in _LISTS and _no_items(environ[name])):
            flat[key] = (name, _env_value(key, environ[name]))
    if "DATABASE_URL" in environ:
        flat["database.url"] = ("DATABASE_URL", environ["DATABASE_URL"] or None)
    values = {}
    for key, (source, value) in flat.items():
        label = key if source == key else f"{source} ({key})"
        values[key] = _SCALARS[key](label, value)
    default_attempts = values.get("max_attempts", Config.max_attempts)
    schedules = parse_schedules(raw.get("schedules"), sorted(handlers), default_attempts)
    return _build(values, handlers, schedules)


def _no_items(text: str) -> bool:
    return not text.replace(",", " ").strip()


def _flatten(raw: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    flat: dict[str, tuple[str, Any]] = {}
    for key, value in raw.items():
        if key in ("handlers", "schedules"):
            continue
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise checks.fail(key, value, "a mapping of keys")
            for sub, sub_value in value.items():
                _known(f"{key}.{sub}")
                flat[f"{key}.{sub}"] = (f"{key}.{sub}", sub_value)
        else:
            _known(str(key))
            flat[key] = (key, value)
    return flat


def _known(key: str) -> None:
    if key in _SCALARS:
        return
    prefix, _, name = key.rpartition(".")
    start = prefix + "." if prefix else ""
    names = {k[len(start) :].split(".")[0] for k in _SCALARS if k.startswith(start)}
    allowed = sorted(names | (set() if prefix else {"handlers", "schedules"}))
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"{key}: unknown key{hint} (allowed here: {', '.join(allowed)})")


def _env_value(key: str, text: str) -> Any:
    if key in (*_LISTS, "database.url", "api.host", "metrics_host"):
        return text
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def _parse_handlers(raw: Any) -> dict[str, HandlerConfig]:
    if not isinstance(raw, dict):
        raise checks.fail("handlers", raw, "a mapping of task type to 'module:function'")
    handlers = {}
    for task_type, spec in raw.items():
        key = f"handlers.{task_type}"
        if not isinstance(task_type, str) or not _TYPE_NAME.match(task_type):
            raise checks.fail(key, task_type, "a type name of letters, digits, '_', '-' or '.'")
        timeout = None
        if isinstance(spec, dict):
            unknown = set(spec) - {"function", "timeout_seconds"}
            if unknown:
                raise ConfigError(
                    f"{key}.{sorted(unknown)[0]}: unknown key (allowed: function, timeout_seconds)"
                )
            timeout = checks.optional(checks.number(0, 604_800))(
                f"{key}.timeout_seconds", spec.get("timeout_seconds")
            )
            spec = spec.get("function")
        if not isinstance(spec, str) or not _TARGET.match(spec):
            raise checks.fail(
                key, spec, "'module:function', e.g. asynctask.workers.handlers:report"
            )
        handlers[task_type] = HandlerConfig(target=spec, timeout_seconds=timeout)
    return handlers


def _build(
    values: dict[str, Any], handlers: dict[str, HandlerConfig], schedules: tuple[Schedule, ...]
) -> Config:
    def section(prefix: str) -> dict[str, Any]:
        return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(prefix + ".")}

    top = {k: v for k, v in values.items() if "." not in k}
    queues = {**Config().priority_queues}
    queues.update({Priority(name): n for name, n in section("priority_queues").items()})
    api = section("api")
    if "tokens" in api:
        pairs = api.pop("tokens")
        api["tokens"] = tuple(token for token, _ in pairs)
        api["read_tokens"] = tuple(token for token, role in pairs if role == "read")
    return Config(
        database=DatabaseConfig(**section("database")),
        api=ApiConfig(**api),
        priority_queues=queues,
        handlers=handlers,
        retention=RetentionConfig(**section("retention")),
        schedules=schedules,
        **top,
    )
