"""`asynctask enqueue` and `asynctask tasks ...` on a real API and workers: output, exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from asynctask.cli import main
from tests.api_server import Stack, free_port


def _run(capsys: pytest.CaptureFixture[str], stack: Stack, *args: str) -> tuple[int, str, str]:
    code = (
        main([args[0], *args[1:], "--url", stack.url])
        if args[0] == "enqueue"
        else main(["tasks", args[0], *args[1:], "--url", stack.url])
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_enqueue_prints_the_task(capsys: pytest.CaptureFixture[str], api_stack: Stack) -> None:
    code, out, err = _run(
        capsys, api_stack, "enqueue", "ok", "--data", '{"a": 1}', "--priority", "low"
    )
    assert code == 0 and err == ""
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["type"] == "ok" and lines["state"] == "available" and lines["data"] == '{"a": 1}'
    assert lines["started_at"] == "-"
    code, out, _ = _run(capsys, api_stack, "enqueue", "ok", "--priority", "low", "--json")
    task = json.loads(out)
    assert code == 0 and task["state"] == "available" and task["priority"] == "low"


def test_enqueue_wait_prints_the_result_and_exits_0(
    capsys: pytest.CaptureFixture[str], api_stack: Stack
) -> None:
    code, out, err = _run(capsys, api_stack, "enqueue", "ok", "--priority", "high", "--wait")
    assert (code, out, err) == (0, "null\n", "")  # `ok` returns nothing
    code, out, _ = _run(
        capsys, api_stack, "enqueue", "ok", "--priority", "high", "--wait", "--json"
    )
    assert code == 0 and json.loads(out)["state"] == "completed"


def test_enqueue_wait_exits_1_when_the_task_fails(
    capsys: pytest.CaptureFixture[str], api_stack: Stack
) -> None:
    code, out, err = _run(
        capsys, api_stack, "enqueue", "boom", "--priority", "high", "--max-attempts", "1", "--wait"
    )
    assert code == 1 and out == ""
    assert err.startswith("asynctask enqueue: task ") and " failed: " in err and "boom" in err


def test_enqueue_wait_with_a_timeout_exits_2(
    capsys: pytest.CaptureFixture[str], api_stack: Stack
) -> None:
    code, _, err = _run(
        capsys, api_stack, "enqueue", "ok", "--priority", "low", "--wait", "--timeout", "0.2"
    )
    assert code == 2 and "is still available after 0.2 s" in err


def test_data_from_a_file_or_stdin(
    capsys: pytest.CaptureFixture[str],
    api_stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "data.json").write_text('{"from": "file"}')
    code, out, _ = _run(
        capsys,
        api_stack,
        "enqueue",
        "ok",
        "--priority",
        "low",
        "--json",
        "--data",
        f"@{tmp_path / 'data.json'}",
    )
    assert code == 0 and json.loads(out)["data"] == {"from": "file"}
    monkeypatch.setattr("sys.stdin", io.StringIO('{"from": "stdin"}'))
    code, out, _ = _run(
        capsys, api_stack, "enqueue", "ok", "--priority", "low", "--json", "--data", "@-"
    )
    assert code == 0 and json.loads(out)["data"] == {"from": "stdin"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{nope", "asynctask enqueue: --data: not valid JSON"),
        ("[1, 2]", "asynctask enqueue: --data: must be a JSON object, not list"),
        ("@/nonexistent/data.json", "asynctask enqueue: --data @/nonexistent/data.json: No such"),
    ],
)
def test_bad_data_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], api_stack: Stack, data: str, message: str
) -> None:
    code, out, err = _run(capsys, api_stack, "enqueue", "ok", "--data", data)
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1


def test_an_api_error_exits_2_with_the_apis_message(
    capsys: pytest.CaptureFixture[str], api_stack: Stack
) -> None:
    code, out, err = _run(capsys, api_stack, "enqueue", "nope")
    assert code == 2 and out == ""
    assert (
        err.startswith("asynctask enqueue: HTTP 422: Invalid request")
        and "type: Must be one of" in err
    )
    code, _, err = _run(capsys, api_stack, "show", str(2**62))
    assert code == 2 and err == f"asynctask tasks: HTTP 404: task {2**62} does not exist\n"


def test_an_unreachable_api_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("asynctask.client.retries.backoff", lambda attempt: 0.0)  # retried at once
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["tasks", "show", "1", "--url", url]) == 2
    assert capsys.readouterr().err.startswith(f"asynctask tasks: {url}: ConnectError")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], api_stack: Stack) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["tasks", "show", "abc"])
    assert caught.value.code == 2
    code, _, err = _run(capsys, api_stack, "list", "--limit", "0")
    assert code == 2 and "--limit: 0 is not allowed" in err


def test_tasks_list_as_a_table_and_as_json(
    capsys: pytest.CaptureFixture[str], api_stack: Stack
) -> None:
    ids = [
        json.loads(
            _run(capsys, api_stack, "enqueue", "listed_cli", "--priority", "low", "--json")[1]
        )["id"]
        for _ in range(3)
    ]
    code, out, _ = _run(capsys, api_stack, "list", "--type", "listed_cli", "--limit", "2")
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[:5] == ["id", "type", "priority", "state", "attempts"]
    assert [int(row.split()[0]) for row in rows] == ids[:0:-1]  # newest first, two of them
    assert rows[0].split()[1:5] == ["listed_cli", "low", "available", "0/5"]
    code, out, _ = _run(capsys, api_stack, "list", "--type", "listed_cli", "--json")
    assert [task["id"] for task in json.loads(out)] == ids[::-1]


def test_tasks_show_cancel_and_retry(
    capsys: pytest.CaptureFixture[str], api_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = json.loads(
        _run(capsys, api_stack, "enqueue", "ok", "--priority", "low", "--json")[1]
    )["id"]
    monkeypatch.setenv("ASYNCTASK_URL", api_stack.url)  # no --url: the environment's
    assert main(["tasks", "cancel", str(task_id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "cancelled"
    assert main(["tasks", "cancel", str(task_id)]) == 2
    assert "HTTP 409: task" in capsys.readouterr().err
    assert main(["tasks", "retry", str(task_id)]) == 0
    assert "state         available" in capsys.readouterr().out
    assert main(["tasks", "show", str(task_id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == task_id
