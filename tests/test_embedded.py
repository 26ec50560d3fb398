"""Zero setup: with no database URL anywhere, asynctask runs on an embedded PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from asynctask.cli import main
from asynctask.core.config import Config
from asynctask.embedded import with_database


def test_configured_url_never_starts_the_embedded_server(tmp_path: Path) -> None:
    config = Config()
    configured = with_database(Config(database=type(config.database)(url="postgresql://h/d")))
    assert configured.database.url == "postgresql://h/d"
    assert not (tmp_path / ".asynctask").exists()


def test_migrate_without_url_uses_an_embedded_server_under_dot_asynctask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("ASYNCTASK_DATABASE_URL", raising=False)
    monkeypatch.delenv("ASYNCTASK_CONFIG", raising=False)
    (tmp_path / "config.yaml").write_text(
        "handlers: {report: 'asynctask.workers.handlers:report'}\n"
    )
    assert main(["migrate"]) == 0
    assert (tmp_path / ".asynctask" / "pgdata" / "PG_VERSION").exists()
    logged = [line for line in capsys.readouterr().err.splitlines() if "embedded" in line]
    assert len(logged) == 1
    assert "DATABASE_URL=" in logged[0]
    # The server is still up for this process: the schema is there.
    url = with_database(Config()).database.url
    assert url is not None
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM tasks")
        assert cur.fetchone() == (0,)
    conn.close()
