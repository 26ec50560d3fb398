"""A failed attempt's error as the `last_error` column keeps it: bounded, with its last frames."""

from __future__ import annotations

import traceback

MAX_ERROR_CHARS = 4000
TRACEBACK_FRAMES = 5


def storable_text(text: str) -> str:
    """`text` as a PostgreSQL text column can hold it: NUL shown as \\x00, lone surrogates escaped.

    An exception's message is the handler's to choose; one that PostgreSQL refuses must not make
    the outcome unwritable (the worker would die on it, and the task would run again forever).
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe_error(error: BaseException, frames: int = TRACEBACK_FRAMES) -> str:
    """`Type: message` plus the last few traceback frames, bounded for the last_error column."""
    head = f"{type(error).__name__}: {error}".rstrip(": ")
    stack = traceback.extract_tb(error.__traceback__)[-frames:]
    lines = [head]
    if stack:
        lines.append("Traceback (most recent call last, last frames):")
        lines.extend(line.rstrip("\n") for line in traceback.format_list(stack))
    text = "\n".join(lines)
    if len(text) > MAX_ERROR_CHARS:
        # Keep the head (what went wrong) and the tail (where): the middle matters least.
        keep = MAX_ERROR_CHARS // 2 - 10
        text = text[:keep] + "\n[...]\n" + text[-keep:]
    return text
