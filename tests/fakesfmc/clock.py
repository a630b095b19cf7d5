"""Clocks: every time-dependent rule in the fake reads one of these, so tests can jump days ahead."""

import threading
import time


class RealClock:
    """Wall-clock time, for standalone runs and real-time tests."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to; thread-safe because the server reads it from many threads."""

    def __init__(self, start: float = 1767225600.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, t: float) -> None:
        with self._lock:
            self._now = float(t)
