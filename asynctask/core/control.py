"""Exceptions a handler raises to ask for a specific outcome: `Retry` later, or `Cancel` for good.

Any other exception fails the attempt as before (retried with the configured backoff until
`max_attempts` is spent). These two are decided like every outcome, by lifecycle.decide.
"""

from __future__ import annotations

import math
from typing import Final

# The finishing statement takes a retry's delay in milliseconds as a 32-bit integer.
MAX_RETRY_SECONDS: Final = 2_147_483  # about 24.8 days


class HandlerRequest(Exception):
    """Base of the exceptions a handler raises on purpose."""


class Retry(HandlerRequest):
    """Retry this task after `after_seconds` instead of the configured backoff.

    It spends the attempt like a failure: once `max_attempts` are spent the task fails, so a
    handler that always asks to retry cannot loop for ever. `reason` goes to `last_error`.
    """

    def __init__(self, after_seconds: float = 0, reason: str = "") -> None:
        if (
            isinstance(after_seconds, bool)
            or not isinstance(after_seconds, int | float)
            or not math.isfinite(after_seconds)
            or not 0 <= after_seconds <= MAX_RETRY_SECONDS
        ):
            raise ValueError(
                f"Retry(after_seconds={after_seconds!r}): must be a number of seconds from 0 to"
                f" {MAX_RETRY_SECONDS} (about 24 days)"
            )
        self.after_seconds = float(after_seconds)
        self.reason = reason
        super().__init__(
            f"retry requested in {after_seconds:g} s" + (f": {reason}" if reason else "")
        )

    @property
    def delay_ms(self) -> int:
        """The delay as the finishing statement takes it."""
        return round(self.after_seconds * 1000)


class Cancel(HandlerRequest):
    """End this task as `cancelled`, whatever attempts remain; `reason` goes to `last_error`."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "cancelled by its handler")
