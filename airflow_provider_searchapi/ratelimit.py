"""Client-side rate limiters shared by threads and coroutines.

Each caller takes the next free start slot under a short lock, then waits for it outside the lock
(``time.sleep`` or ``asyncio.sleep``). Slots are ``1 / rate`` apart, so the starts never exceed the rate
over any window, however many callers there are. A slot is taken only when it is due within
``HORIZON_SECONDS``; callers whose slot is further away wait until it comes that close, so that a change
of rate applies at once to everyone waiting. :class:`AdaptiveRateLimiter` also lowers its rate when
the server answers 429, and climbs back to the configured rate while it does not.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

#: Slots are taken at most this long before they are due.
HORIZON_SECONDS = 0.2


class Limiter(Protocol):
    """What a caller needs of a rate limiter (a local one, or the one shared in Redis)."""

    def acquire(self) -> None: ...

    async def aacquire(self) -> None: ...

    def throttled(self, retry_after: float | None) -> None: ...


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
        #: changes when the slots taken so far are void (a 429 came); their holders take new ones
        self._generation = 0

    def _reserve(self) -> tuple[bool, float]:
        """Take the next slot if it is due within the horizon; return whether it was taken and how long
        to wait (for the slot, or until it comes within the horizon)."""
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now - self._burst_span)
            if slot - now > HORIZON_SECONDS:
                return False, slot - now - HORIZON_SECONDS
            self._next = slot + self._interval
            return True, max(0.0, slot - now)

    def acquire(self) -> None:
        """Block the calling thread until it may start a request."""
        while True:
            generation, (taken, delay) = self._generation, self._reserve()
            if delay > 0:
                time.sleep(delay)
            if taken and generation == self._generation:
                return

    async def aacquire(self) -> None:
        """Wait, without blocking the event loop, until the caller may start a request."""
        while True:
            generation, (taken, delay) = self._generation, self._reserve()
            if delay > 0:
                await asyncio.sleep(delay)
            if taken and generation == self._generation:
                return

    def throttled(self, retry_after: float | None) -> None:
        """Told that the server refused a start with 429; a fixed-rate limiter ignores it."""


class AdaptiveRateLimiter(RateLimiter):
    """A limiter that backs off when the server says the quota is exceeded, so that processes that do
    not share a limiter settle under the quota instead of fighting over it.

    A 429 multiplies the rate by ``decrease`` (the 429s of one burst, within a second of each other,
    count once), voids the slots already taken, and holds every start until its ``Retry-After`` has
    passed; then the rate climbs back
    by ``recovery`` × the configured rate per second, up to the configured rate. Each change of
    direction is logged, not each request.

    :param rate: the configured rate, and the highest (starts per second, > 0).
    :param decrease: factor applied to the rate on a 429 (between 0 and 1).
    :param recovery: share of the configured rate regained per second without a 429.
    :param min_share: the rate never goes below this share of the configured rate.
    :param name: what log lines call this limiter.
    """

    def __init__(
        self,
        rate: float,
        *,
        decrease: float = 0.7,
        recovery: float = 0.02,
        min_share: float = 0.05,
        name: str = "Search API",
    ) -> None:
        super().__init__(rate)
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be between 0 and 1 (got {decrease})")
        self.max_rate = rate
        self.name = name
        self._decrease = decrease
        self._recovery = recovery * rate
        self._min_rate = max(min_share * rate, 1e-3)
        self._last_cut = -1e9
        self._updated = time.monotonic()

    def _set_rate(self, rate: float) -> None:
        self.rate = rate
        self._interval = 1.0 / rate

    def _reserve(self) -> tuple[bool, float]:
        with self._lock:
            now = time.monotonic()
            if self.rate < self.max_rate:
                self._set_rate(min(self.max_rate, self.rate + self._recovery * (now - self._updated)))
                if self.rate == self.max_rate:
                    log.info("%s: no 429 lately; back to the configured %.3g requests/s", self.name, self.rate)
            self._updated = now
        return super()._reserve()

    def throttled(self, retry_after: float | None) -> None:
        """Lower the rate (once per burst of 429s) and hold starts until ``retry_after`` seconds passed."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_cut < 1.0:
                if retry_after:
                    self._next = max(self._next, now + retry_after)
                return
            self._last_cut = self._updated = now
            self._set_rate(max(self._min_rate, self.rate * self._decrease))
            self._next = now + (retry_after or 0.0)
            self._generation += 1  # the slots already taken go at the old rate: take new ones
        log.warning(
            "%s: the server answered 429 (quota exceeded); this process slows to %.3g requests/s "
            "and climbs back to %.3g while no 429 comes",
            self.name,
            self.rate,
            self.max_rate,
        )


_shared: dict[tuple[str, float], AdaptiveRateLimiter] = {}
_shared_lock = threading.Lock()


def shared_rate_limiter(name: str, rate: float) -> AdaptiveRateLimiter:
    """One adaptive limiter per (name, rate) in this process, so that every hook of a connection shares it."""
    with _shared_lock:
        limiter = _shared.get((name, rate))
        if limiter is None:
            limiter = _shared[(name, rate)] = AdaptiveRateLimiter(rate, name=name)
        return limiter
