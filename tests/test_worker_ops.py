"""Worker operations with real processes: multiprocess Prometheus metrics and JSON log lines."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2.extensions
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from asynctask.cli.start import run_all
from asynctask.core.config import Config
from asynctask.core.errors import ConfigError
from asynctask.core.logs import JsonFormatter, setup_logging
from asynctask.workers import metrics
from asynctask.workers.report import describe
from tests.conftest import TEST_HANDLERS, make_config
from tests.processes import answers, free_port
from tests.procs import (
    CTX,
    children,
    count,
    insert_many,
    kill_tree,
    listening,
    pid_of,
    stop,
    supervisor,
)
from tests.test_worker import insert, running, states_are
from tests.waiting import wait_until as wait_for
from tests.waiting import wait_until_async

Cursor = psycopg2.extensions.cursor
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def supervise_all(config: Config, port: int) -> None:
    """`asynctask run` in this (spawned) process."""
    setup_logging("INFO", "text")
    sys.exit(run_all(config, "127.0.0.1", port))


def scrape(port: int) -> Samples:
    """Every sample of the supervisor's /metrics, parsed by prometheus-client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(tuple(sorted(labels.items())))


def finished(samples: Samples, outcome: str) -> float | None:
    name = "asynctask_worker_tasks_finished_total"
    return value(samples, name, outcome=outcome, priority="high")


def insert_failing(sql: Cursor, n: int, max_attempts: int) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, max_attempts)"
        " SELECT 'boom', 1, %s FROM generate_series(1, %s)",
        (max_attempts, n),
    )


def multiproc_dir(pid: int) -> Path:
    """The metrics directory a worker writes to (/proc/<pid>/environ is clobbered by the title)."""
    (found,) = Path(tempfile.gettempdir()).glob(f"asynctask-metrics-*/counter_{pid}.db")
    return found.parent


def test_metrics_sum_all_worker_processes_and_count_restarts(
    database_url: str, sql: Cursor
) -> None:
    port = free_port()
    config = make_config(
        database_url, priority_queues={"high": 2, "normal": 0, "low": 0}, metrics_port=port
    )
    with supervisor(config, sql) as process:
        workers = children(pid_of(process))
        assert set(workers) == {
            "asynctask forkserver",
            "asynctask worker high_1",
            "asynctask worker high_2",
        }
        directory = multiproc_dir(workers["asynctask worker high_1"])
        assert multiproc_dir(workers["asynctask worker high_2"]) == directory
        restarts = "asynctask_worker_restarts_total"
        assert value(scrape(port), restarts, slot="high_1") == 0  # exported before any restart
        insert_many(sql, 30)
        insert_failing(sql, 3, max_attempts=2)
        wait_for(lambda: count(sql, "state IN ('completed', 'failed')") == 33)
        samples = scrape(port)
        assert finished(samples, "completed") == 30
        assert finished(samples, "retrying") == 3
        assert finished(samples, "failed") == 3
        duration = "asynctask_worker_attempt_duration_seconds_count"
        assert value(samples, duration, type="ok") == 30
        assert value(samples, duration, type="boom") == 6

        os.kill(workers["asynctask worker high_1"], signal.SIGKILL)
        wait_for(lambda: value(scrape(port), restarts, slot="high_1") == 1)
        wait_for(lambda: listening(sql) == 2)
        insert_many(sql, 20)
        wait_for(lambda: count(sql, "state = 'completed'") == 50)
        samples = scrape(port)
        # The killed process's counts stay in the sum: counters never go back on a restart.
        assert finished(samples, "completed") == 50
        assert len(list(directory.glob("counter_*.db"))) == 3  # two live processes, one dead
        assert value(samples, restarts, slot="high_2") == 0
        assert stop(process) == 0
    assert not directory.exists()


def test_the_api_child_keeps_its_metrics_out_of_the_workers(database_url: str, sql: Cursor) -> None:
    api_port, metrics_port = free_port(), free_port()
    config = make_config(
        database_url, priority_queues={"high": 1, "normal": 0, "low": 0}, metrics_port=metrics_port
    )
    process = CTX.Process(target=supervise_all, args=(config, api_port))
    process.start()
    try:
        wait_for(lambda: listening(sql) == 1)
        wait_for(lambda: answers(f"http://127.0.0.1:{api_port}/health"))
        api = set(scrape(api_port))
        assert "asynctask_http_requests_total" in api
        assert not any(name.startswith("asynctask_worker_") for name in api)
        workers = set(scrape(metrics_port))
        assert "asynctask_worker_tasks_finished_total" in workers
        assert not any(name.startswith("asynctask_http") for name in workers)
        assert stop(process) == 0
    finally:
        kill_tree(process)


def test_metrics_port_in_use_is_a_config_error_and_leaves_nothing(database_url: str) -> None:
    before = set(Path(tempfile.gettempdir()).glob("asynctask-metrics-*"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = make_config(database_url, metrics_port=taken.getsockname()[1])
        directory = metrics.supervisor_metrics(config, ["high_1"])
        assert directory is not None
        with pytest.raises(ConfigError, match=r"metrics_port: cannot serve on 127\.0\.0\.1:"):
            metrics.serve_supervisor_metrics(directory)
    assert set(Path(tempfile.gettempdir()).glob("asynctask-metrics-*")) == before
    assert metrics.ENV not in os.environ


def test_no_metrics_without_a_port_or_a_supervisor_directory(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(metrics.ENV, raising=False)
    assert metrics.worker_metrics(make_config(database_url), "high") is None
    assert metrics.worker_metrics(make_config(database_url, metrics_port=9), "high") is None


@contextlib.contextmanager
def json_lines(level: int) -> Iterator[io.StringIO]:
    """Capture the asynctask loggers as JSON lines at `level`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("asynctask")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def events(text: str, event: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in text.splitlines()]  # every line is one object
    return [r for r in records if r.get("event") == event]


async def test_task_lines_in_process_at_info(database_url: str, sql: Cursor) -> None:
    ids = [insert(sql, "ok"), insert(sql, "boom", max_attempts=1), insert(sql, "nope")]
    with json_lines(logging.INFO) as stream:
        async with running(make_config(database_url, timeout_milliseconds=100)):
            await wait_until_async(states_are(sql, ids, "completed", "failed"))
    lines = events(stream.getvalue(), "task finished")
    # At INFO completions are not logged (the metrics count them): only the two failures.
    assert [(r["task_id"], r["outcome"], r["level"]) for r in lines] == [
        (ids[1], "failed", "WARNING"),
        (ids[2], "failed", "WARNING"),
    ]
    boom, unknown = lines
    assert boom["type"] == "boom" and boom["attempt"] == 1 and boom["slot"] == "high_1"
    assert boom["duration"] >= 0 and boom["error"] == "ValueError: boom"
    assert unknown["duration"] is None and "no handler is registered" in unknown["error"]


async def test_a_retry_line_says_how_long_the_attempt_ran_and_when_the_next_starts(
    database_url: str, sql: Cursor
) -> None:
    flaky = insert(sql, "flaky", {"succeed_on": 2})
    with json_lines(logging.INFO) as stream:
        async with running(make_config(database_url, timeout_milliseconds=100)):
            await wait_until_async(states_are(sql, [flaky], "completed"))
    (line,) = events(stream.getvalue(), "task finished")
    assert line["outcome"] == "retrying" and line["retry_in"] == 0.1
    assert line["message"] == (
        f"high_1: task {flaky} (flaky) attempt 1 of 5 failed after {line['duration']:.3f} s;"
        " retrying in 0.100 s: RuntimeError: flaky failure on attempt 1"
    )


@pytest.mark.parametrize(
    ("outcome", "seconds", "error", "retry_in", "words"),
    [
        ("completed", 0.0021, None, None, "completed in 0.002 s"),
        ("retrying", 0.0021, "E: x", 1.5, "failed after 0.002 s; retrying in 1.500 s: E: x"),
        (
            "failed",
            2.0,
            "TimeoutError",
            None,
            "failed after 2.000 s; the task failed: TimeoutError",
        ),
        ("failed", None, "no handler", None, "failed without running; the task failed: no handler"),
    ],
)
def test_describe_an_attempt_in_words(
    outcome: str, seconds: float | None, error: str | None, retry_in: float | None, words: str
) -> None:
    assert describe(outcome, seconds, error, retry_in) == words


def test_json_lines_of_a_real_supervisor(tmp_path: Path, database_url: str, sql: Cursor) -> None:
    raw = {
        "database": {"url": database_url},
        "handlers": TEST_HANDLERS,
        "priority_queues": {"high": 1, "normal": 0, "low": 0},
        "timeout_milliseconds": 200,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    # Format and level from the environment, as a container would set them.
    env = {**os.environ, "ASYNCTASK_LOG_FORMAT": "json", "ASYNCTASK_LOG_LEVEL": "debug"}
    log_path = tmp_path / "workers.log"
    command = [sys.executable, "-m", "asynctask.cli", "--config", str(tmp_path / "config.yaml")]
    with log_path.open("w") as log:
        process = subprocess.Popen([*command, "workers"], stderr=log, env=env)
    try:
        wait_for(lambda: listening(sql) == 1)
        ok = insert(sql, "ok")
        flaky = insert(sql, "flaky", {"succeed_on": 2})
        wait_for(lambda: count(sql, "state = 'completed'") == 2)
        first = children(process.pid)["asynctask worker high_1"]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: children(process.pid).get("asynctask worker high_1") not in (None, first))
        wait_for(lambda: listening(sql) == 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    lines = {(r["task_id"], r["attempt"]): r for r in events(text, "task finished")}
    assert {key: r["outcome"] for key, r in lines.items()} == {
        (ok, 1): "completed",
        (flaky, 1): "retrying",
        (flaky, 2): "completed",
    }
    assert lines[(ok, 1)]["level"] == "DEBUG" and lines[(flaky, 1)]["level"] == "INFO"
    for line in lines.values():
        assert line["slot"] == "high_1" and line["type"] in ("ok", "flaky")
        assert isinstance(line["duration"], float)
    (restart,) = events(text, "restart")
    assert restart["slot"] == "high_1" and restart["pid"] == first
    assert "SIGKILL" in restart["cause"] and restart["level"] == "ERROR"
    messages = [json.loads(line)["message"] for line in text.splitlines()]
    assert sum(m.startswith("worker high_1 started") for m in messages) == 2
    assert any(m == "worker high_1 stopped" for m in messages)
