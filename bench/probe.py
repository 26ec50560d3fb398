"""Readiness probes: GET /ready of every API, again and again, each answer timed and kept."""

from __future__ import annotations

import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL = 0.2
TIMEOUT = 5.0


@dataclass(frozen=True)
class Sample:
    """One probe: when it was answered (wall clock), the status (0: no answer), how long it took."""

    at: float
    status: int
    seconds: float


class Probes:
    """One thread per API base URL, probing until `stop`."""

    def __init__(self, bases: dict[str, str]) -> None:
        self.samples: dict[str, list[Sample]] = {name: [] for name in bases}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._probe, args=(name, base), daemon=True)
            for name, base in bases.items()
        ]
        for thread in self._threads:
            thread.start()

    def _probe(self, name: str, base: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(base + "/ready", timeout=TIMEOUT) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (urllib.error.URLError, OSError):
                status = 0
            took = time.monotonic() - started
            self.samples[name].append(Sample(time.time(), status, took))
            self._stop.wait(max(0.0, INTERVAL - took))

    def stop(self) -> None:
        """Stop probing (waits for the probes in flight)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT + 1)

    def first(self, name: str, after: float, test: Callable[[Sample], bool]) -> Sample | None:
        """The first sample of one API answered at or after `after` that passes `test`."""
        return next((s for s in self.samples[name] if s.at >= after and test(s)), None)

    def median_ms(self, name: str, start: float, end: float) -> float | None:
        """Median duration of the answered (200) probes of one API answered within [start, end)."""
        took = [s.seconds for s in self.samples[name] if start <= s.at < end and s.status == 200]
        return round(statistics.median(took) * 1000, 1) if took else None
