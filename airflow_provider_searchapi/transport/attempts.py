"""What every transport does around a call: retries, the rate limit per attempt, and counters."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import TypeVar

from airflow_provider_searchapi.exceptions import SearchApiHTTPError
from airflow_provider_searchapi.ratelimit import RateLimiter
from airflow_provider_searchapi.retry import RetryPolicy

Prepared = TypeVar("Prepared")
Result = TypeVar("Result")


class Attempts:
    """Runs a call under the retry policy; every attempt first prepares, then waits for a start slot.

    Preparing (minting a token, making a client) comes before the slot, so that a slow preparation
    cannot bunch the starts that follow it.

    :param limiter: the rate limiter every attempt waits on.
    :param retry_policy: how failed attempts are retried.
    """

    def __init__(self, limiter: RateLimiter, retry_policy: RetryPolicy | None = None) -> None:
        self._limiter = limiter
        self._retry_policy = retry_policy or RetryPolicy()
        #: attempts sent, each counted against the quota
        self.sent = 0
        #: failed attempts by HTTP status (0: no answer)
        self.failures: collections.Counter[int] = collections.Counter()

    def run(self, prepare: Callable[[], Prepared], send: Callable[[Prepared], Result]) -> Result:
        for attempt in self._retry_policy.retrying():
            with attempt:
                prepared = prepare()
                self._limiter.acquire()
                self.sent += 1
                try:
                    return send(prepared)
                except SearchApiHTTPError as err:
                    self.failures[err.status] += 1
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def arun(
        self, prepare: Callable[[], Awaitable[Prepared]], send: Callable[[Prepared], Awaitable[Result]]
    ) -> Result:
        async for attempt in self._retry_policy.async_retrying():
            with attempt:
                prepared = await prepare()
                await self._limiter.aacquire()
                self.sent += 1
                try:
                    return await send(prepared)
                except SearchApiHTTPError as err:
                    self.failures[err.status] += 1
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last error")


class CountsAttempts:
    """Exposes an :class:`Attempts`' counters as a transport's ``requests_sent`` and ``failures``."""

    _attempts: Attempts

    @property
    def requests_sent(self) -> int:
        """Attempts sent, each counted against the quota."""
        return self._attempts.sent

    @property
    def failures(self) -> collections.Counter[int]:
        """Failed attempts by HTTP status, or the status of the same meaning (0: no answer)."""
        return self._attempts.failures
