"""The installed asynctask version, for the client's User-Agent."""

from __future__ import annotations

import importlib.metadata


def _version() -> str:
    try:
        return importlib.metadata.version("asynctask")
    except importlib.metadata.PackageNotFoundError:  # run from a bare source tree
        return "0.0.0"


VERSION = _version()
