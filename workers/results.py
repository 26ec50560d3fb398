"""A handler's return value as the JSON text stored with its completed task (`result`).

Encoded here, in the worker, and checked so that PostgreSQL accepts it whatever it is: the
finishing statement writes many outcomes at once, and one value jsonb refused would fail them
all. So NaN and infinities, lone surrogates and NUL characters (jsonb refuses \\u0000) are turned
away here, with the size limit, as a ResultError whose message becomes the attempt's last_error.
Nesting needs no check of its own: Python's encoder stops at its recursion limit (1,000 by
default), and jsonb parses ten times deeper at PostgreSQL's default max_stack_depth.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A \u0000 escape that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class ResultError(Exception):
    """The return value cannot be stored; the message says why."""


def encode_result(value: Any, max_bytes: int) -> str | None:
    """JSON text for a return value (None for None: nothing is stored); ResultError if unfit."""
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except RecursionError:
        raise ResultError("result: the return value is nested too deeply to store") from None
    except UnicodeEncodeError:
        raise ResultError(
            "result: the return value holds a string that is not valid Unicode (a lone surrogate)"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ResultError(
            f"result: the return value is not JSON-serialisable ({type(exc).__name__}: {exc})"
        ) from None
    if size > max_bytes:
        raise ResultError(
            f"result: the return value is {size} bytes as JSON, more than max_result_bytes"
            f" = {max_bytes}"
        )
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ResultError(
            "result: the return value holds a NUL character (\\u0000), which"
            " PostgreSQL's jsonb cannot store"
        )
    return text
