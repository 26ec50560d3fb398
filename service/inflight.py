"""The Idempotency-Keys this API process is answering right now (service/idempotency.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from asynctask.core.creates import RequestKey
from asynctask.core.errors import AsyncTaskError


class KeyInFlight(AsyncTaskError):
    """A request with the same Idempotency-Key is still being answered: 409, retry later."""


class InFlight:
    """The keys this process is answering right now: a twin of one of them gets 409."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()

    @contextlib.contextmanager
    def hold(self, key: RequestKey | None) -> Iterator[None]:
        """Mark the key as in flight for the block; KeyInFlight if it already is."""
        if key is None:
            yield
            return
        ident = (key.scope, key.key)
        if ident in self._keys:
            raise KeyInFlight(
                "a request with this Idempotency-Key is still in flight; retry when it is answered"
            )
        self._keys.add(ident)
        try:
            yield
        finally:
            self._keys.discard(ident)
