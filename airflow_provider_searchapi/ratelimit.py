"""The client-side rate limiter shared by the threads and coroutines of a process.

Each caller takes the next free start slot under a short lock, then waits for it outside the lock.
Slots are ``1 / rate`` apart, so the starts never exceed the rate over any window, however many
callers there are. A slot is taken only when it is due within ``HORIZON_SECONDS``, so that a change
of rate applies at once to everyone waiting. A caller that wakes a slot or more late (a stalled event
loop, a busy machine) starts only if no other start came within a slot's length, else takes a fresh
slot, so that the starts a stall delayed do not go together.
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
#: A caller that wakes this late for its slot (or one slot late, if longer) takes a fresh slot.
LATE_SECONDS = 0.01


class Limiter(Protocol):
    """What a caller needs of a rate limiter (this process's, or the one shared in Redis)."""

    def acquire(self) -> None: ...

    async def aacquire(self) -> None: ...

    def throttled(self, retry_after: float | None) -> None: ...


class RateLimiter:
    """At most ``rate`` starts per second, evenly spaced; slower for a while after a 429, so that
    processes that do not share a limiter settle under the quota instead of fighting over it.

    A 429 multiplies the rate by ``decrease`` (the 429s within a second of each other count once),
    voids the slots already taken and holds every start until its ``Retry-After`` has passed; then the
    rate climbs back by ``recovery`` × ``rate`` per second. Each change of direction is logged once.

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
        if rate <= 0:
            raise ValueError(f"rate must be > 0 (got {rate})")
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be between 0 and 1 (got {decrease})")
        self.rate = self.max_rate = rate
        self.name = name
        self._decrease = decrease
        self._recovery = recovery * rate
        self._min_rate = max(min_share * rate, 1e-3)
        self._lock = threading.Lock()
        self._next = 0.0  # when the next free slot is due
        self._updated = time.monotonic()  # when the rate was last brought up to date
        self._last_cut = -1e9
        self._generation = 0  # changes when a 429 voids the slots taken so far
        self._last_start = -1e9

    def _reserve(self) -> tuple[bool, float]:
        """Take the next slot if it is due within the horizon; return whether it was taken and when to
        wake (``time.monotonic()``: when the slot is due, or when it comes within the horizon)."""
        with self._lock:
            now = time.monotonic()
            if self.rate < self.max_rate:
                self.rate = min(self.max_rate, self.rate + self._recovery * (now - self._updated))
                if self.rate == self.max_rate:
                    log.info("%s: no 429 lately; back to the configured %.3g requests/s", self.name, self.rate)
            self._updated = now
            slot = max(self._next, now)
            if slot - now > HORIZON_SECONDS:
                return False, slot - HORIZON_SECONDS
            self._next = slot + 1.0 / self.rate
            return True, slot

    def _may_start(self, taken: bool, due: float, generation: int) -> bool:
        """Whether a caller that woke for its slot may start: the slot is still valid, and the caller is on
        time or no start came within the last slot's length (a late start then bunches with none; refusing
        every late caller would starve them all when wake-ups are always late, e.g. a busy GIL)."""
        with self._lock:
            now, interval = time.monotonic(), 1.0 / self.rate
            late = now - due >= max(LATE_SECONDS, interval)
            if not taken or generation != self._generation or (late and now - self._last_start < interval):
                return False
            if late:  # the start takes the place of a fresh slot: later reservations keep their distance
                self._next = max(self._next, now + interval)
            self._last_start = now
            return True

    def acquire(self) -> None:
        """Block the calling thread until it may start a request."""
        while True:
            generation, (taken, due) = self._generation, self._reserve()
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if self._may_start(taken, due, generation):
                return

    async def aacquire(self) -> None:
        """Wait, without blocking the event loop, until the caller may start a request."""
        while True:
            generation, (taken, due) = self._generation, self._reserve()
            delay = due - time.monotonic()
            if delay > 0:  # a slot due now is used at once: yielding first lets the starts bunch
                await asyncio.sleep(delay)
            if self._may_start(taken, due, generation):
                return

    def throttled(self, retry_after: float | None) -> None:
        """Lower the rate (once per burst of 429s) and hold starts until ``retry_after`` seconds passed."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_cut < 1.0:  # the same burst: the rate stays, the wait may grow
                if retry_after and now + retry_after > self._next:
                    self._next = now + retry_after
                    self._generation += 1  # the slots taken would start inside the wait
                return
            self._last_cut = self._updated = now
            self.rate = max(self._min_rate, self.rate * self._decrease)
            self._next = now + (retry_after or 0.0)
            self._generation += 1
        log.warning(
            "%s: the server answered 429 (quota exceeded); this process slows to %.3g requests/s "
            "and climbs back to %.3g while no 429 comes",
            self.name,
            self.rate,
            self.max_rate,
        )


_shared: dict[str, RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_rate_limiter(name: str, rate: float) -> RateLimiter:
    """One limiter per name (a folder's quota) in this process, so that every hook of the folder shares
    it. It keeps the rate first asked: a limiter per rate would let the hooks together exceed the quota.

    :param name: what the limiter is for, and what its log lines call it.
    :param rate: starts per second; a caller asking another rate is warned that it is not applied.
    """
    with _shared_lock:
        if name not in _shared:
            _shared[name] = RateLimiter(rate, name=name)
        limiter = _shared[name]
    if limiter.max_rate != rate:
        log.warning(
            "%s: requests_per_second=%.3g is not applied: the hooks of this process share one limit "
            "at %.3g, the rate first set (give every hook of the folder the same rate)",
            name,
            rate,
            limiter.max_rate,
        )
    return limiter
