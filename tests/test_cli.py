"""The `asynctask` command: migrate (twice, and into a missing database), bad config, api, stats."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
import yaml

from asynctask.cli import main
from tests.conftest import ADMIN_DSN, TEST_HANDLERS

Cursor = psycopg2.extensions.cursor


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() installs its own root handler on the (captured) stderr; put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _write_config(path: Path, url: str, **extra: object) -> Path:
    raw = {"database": {"url": url}, "handlers": TEST_HANDLERS, **extra}
    path.write_text(yaml.safe_dump(raw))
    return path


def _api_command(config: Path, port: int) -> list[str]:
    """`asynctask --config CONFIG api --port PORT`, run from this checkout."""
    return [
        sys.executable,
        "-m",
        "asynctask.cli",
        "--config",
        str(config),
        "api",
        "--port",
        str(port),
    ]


def _schema_fingerprint(sql: Cursor) -> list[tuple[object, ...]]:
    sql.execute(
        "SELECT c.relname, c.relkind, c.reloptions::text, pg_get_indexdef(i.indexrelid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE n.nspname = 'public' ORDER BY c.relname"
    )
    return list(sql.fetchall())


def test_migrate_twice_succeeds_and_the_second_run_changes_nothing(
    tmp_path: Path, database_url: str, sql: Cursor
) -> None:
    config = _write_config(tmp_path / "config.yaml", database_url)
    assert main(["--config", str(config), "migrate"]) == 0
    sql.execute("INSERT INTO tasks (type) VALUES ('ok')")
    before = _schema_fingerprint(sql)
    assert main(["--config", str(config), "migrate"]) == 0
    assert _schema_fingerprint(sql) == before
    sql.execute("SELECT count(*) FROM tasks")
    assert sql.fetchone() == (1,)


@pytest.fixture
def missing_database() -> Iterator[str]:
    """A URL naming a database that does not exist yet; dropped afterwards."""
    name = f"asynctask_cli_{uuid.uuid4().hex[:12]}"
    yield psycopg2.extensions.make_dsn(ADMIN_DSN, dbname=name)
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def test_migrate_creates_a_missing_database(tmp_path: Path, missing_database: str) -> None:
    config = _write_config(tmp_path / "config.yaml", missing_database)
    assert main(["--config", str(config), "migrate"]) == 0
    conn = psycopg2.connect(missing_database)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.tasks') IS NOT NULL")
        assert cur.fetchone() == (True,)
    conn.close()


def test_a_bad_config_value_exits_2_with_one_line(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path / "config.yaml", database_url, api={"port": 0})
    assert main(["--config", str(config), "migrate"]) == 2
    err = capsys.readouterr().err
    assert err == "asynctask: api.port: 0 is not allowed (a TCP port from 1 to 65535)\n"


def test_an_invalid_port_is_refused(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_write_config(tmp_path / "config.yaml", database_url))
    assert main(["--config", config, "api", "--port", "70000"]) == 1
    assert "--port: 70000 is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["--config", config, "api", "--port", "http"])
    assert exited.value.code == 2
    assert "invalid int value: 'http'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_serves_logs_its_url_and_stops_on_sigterm(tmp_path: Path, database_url: str) -> None:
    config = _write_config(tmp_path / "config.yaml", database_url)
    port = _free_port()
    log_path = tmp_path / "api.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            _api_command(config, port),
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert f"asynctask api on http://127.0.0.1:{port} (docs at /api/docs)" in log_path.read_text()


def test_api_exits_1_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere"
    config = _write_config(tmp_path / "config.yaml", url)
    result = subprocess.run(
        _api_command(config, _free_port()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "is unavailable" in result.stderr and "Traceback" not in result.stderr


def _fill(sql: Cursor) -> None:
    sql.execute(
        "INSERT INTO tasks (type, priority, state, finished_at, scheduled_at) VALUES"
        " ('ok', 1, 'available', NULL, now() - interval '42 seconds'),"
        " ('ok', 1, 'available', NULL, now()),"
        " ('ok', 2, 'completed', now(), now()),"
        " ('ok', 3, 'failed', now(), now()),"
        " ('ok', 3, 'cancelled', now(), now())"
    )


def test_stats_prints_a_table(
    tmp_path: Path, database_url: str, sql: Cursor, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(sql)
    config = _write_config(tmp_path / "config.yaml", database_url)
    assert main(["--config", str(config), "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "priority", "available", "running", "retrying", "completed", "failed", "cancelled",
        "lag", "(s)",
    ]  # fmt: skip
    high, normal, low = (line.split() for line in lines[1:4])
    assert high[:7] == ["high", "2", "0", "0", "0", "0", "0"] and 42 <= float(high[7]) < 60
    assert normal == ["normal", "0", "0", "0", "1", "0", "0", "0.0"]
    assert low == ["low", "0", "0", "0", "0", "1", "1", "0.0"]
    assert lines[4:] == ["", "last minute: completed 1, failed 1"]
    assert len({len(line) for line in lines[:4]}) == 1  # the columns line up


def test_stats_json_is_the_api_answer(
    tmp_path: Path, database_url: str, sql: Cursor, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(sql)
    config = _write_config(tmp_path / "config.yaml", database_url)
    assert main(["--config", str(config), "stats", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert set(body) >= {"counts", "queue_lag_seconds", "last_minute", "per_minute", "paused"}
    assert body["counts"]["low"] == {
        "available": 0, "running": 0, "retrying": 0, "completed": 0, "failed": 1, "cancelled": 1
    }  # fmt: skip
    assert body["counts"]["high"]["available"] == 2 and body["queue_lag_seconds"]["high"] >= 42
    assert body["last_minute"] == {"completed": 1, "failed": 1}


def test_stats_exits_1_when_the_database_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere"
    config = _write_config(tmp_path / "config.yaml", url)
    assert main(["--config", str(config), "stats"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "is unavailable" in captured.err


def test_console_script_runs_handlers_from_the_working_directory(
    tmp_path: Path, database_url: str, sql: Cursor
) -> None:
    # A user's handler module lives where they run `asynctask`, not in an installed package.
    (tmp_path / "myhandlers.py").write_text(
        "def go(task):\n    open(f'done-{task.id}', 'w').close()\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"url": database_url},
                "handlers": {"mine": "myhandlers:go"},
                "priority_queues": {"high": 1, "normal": 0, "low": 0},
                "timeout_milliseconds": 100,
            }
        )
    )
    sql.execute("INSERT INTO tasks (type, priority) VALUES ('mine', 1)")
    script = Path(sys.executable).with_name("asynctask")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [str(script), "--config", str(config), "workers"], cwd=tmp_path, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "done-1").exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    sql.execute("SELECT state FROM tasks WHERE id = 1")
    assert sql.fetchone() == ("completed",)
