"""A client-side rate limiter shared by threads and coroutines.

Each caller reserves the next free start slot under a short lock, then waits for it outside the lock
(``time.sleep`` or ``asyncio.sleep``). Slots are ``1 / rate`` apart, so the starts never exceed the rate
over any window, however many callers there are.
"""

from __future__ import annotations

import asyncio
import threading
import time


class RateLimiter:
    """At most ``rate`` starts per second, spaced evenly.

    :param rate: starts per second (> 0).
    :param burst: starts allowed back to back after an idle period (1 keeps the spacing strict, so
        that no one-second window ever holds more than ``rate`` starts).
    """

    def __init__(self, rate: float, *, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 (got {rate})")
        if burst < 1:
            raise ValueError(f"burst must be >= 1 (got {burst})")
        self.rate = rate
        self._interval = 1.0 / rate
        self._burst_span = (burst - 1) * self._interval
        self._next = 0.0
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take the next slot and return how long to wait for it."""
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now - self._burst_span)
            self._next = slot + self._interval
            return max(0.0, slot - now)

    def acquire(self) -> None:
        """Block the calling thread until it may start a request."""
        delay = self._reserve()
        if delay > 0:
            time.sleep(delay)

    async def aacquire(self) -> None:
        """Wait, without blocking the event loop, until the caller may start a request."""
        delay = self._reserve()
        if delay > 0:
            await asyncio.sleep(delay)


_shared: dict[tuple[str, float], RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_rate_limiter(name: str, rate: float) -> RateLimiter:
    """One limiter per (name, rate) in this process, so that every hook of a connection shares it."""
    with _shared_lock:
        limiter = _shared.get((name, rate))
        if limiter is None:
            limiter = _shared[(name, rate)] = RateLimiter(rate)
        return limiter
