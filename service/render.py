"""Tasks as JSON answers. A task's `data` is spliced in as the JSON text it was stored as.

The API never parses stored data: core/task_rows.py reads it as text, and it goes into the answer
unchanged. That keeps every stored row readable (one nested too deep for Python, inserted by plain
SQL, is shown as it is instead of failing the request) and saves a decode and an encode per task.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

_TIMESTAMPS = ("scheduled_at", "inserted_at", "updated_at", "started_at", "finished_at")
_SPLICED = ("data", "result")


def task_text(row: dict[str, Any], data_json: str | None = None) -> str:
    """One task row as a JSON object; its data is `data_json`, else the row's own (JSON text).

    A row read with its `result` (JSON text or None) shows it, spliced in like the data.
    """
    fields = {key: value for key, value in row.items() if key not in _SPLICED}
    for key in _TIMESTAMPS:
        value = fields[key]
        if value is not None:
            fields[key] = value.isoformat()
    data = row["data"] if data_json is None else data_json
    text = json.dumps(fields)[:-1] + ', "data": ' + data
    if "result" in row:
        text += ', "result": ' + (row["result"] or "null")
    return text + "}"


def page_text(rows: Sequence[dict[str, Any]], next_cursor: str | None) -> str:
    """A list page: {"tasks": [...], "next_cursor": ...}."""
    tasks = ", ".join(task_text(row) for row in rows)
    return '{"tasks": [' + tasks + '], "next_cursor": ' + json.dumps(next_cursor) + "}"


def json_text(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """An answer whose JSON body is already text."""
    return web.Response(text=text, status=status, headers=headers, content_type="application/json")
