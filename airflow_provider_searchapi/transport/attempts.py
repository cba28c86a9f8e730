"""What every transport does around a call: retries, the rate limit per attempt, and counters."""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, Retrying

from airflow_provider_searchapi.exceptions import SearchApiHTTPError
from airflow_provider_searchapi.ratelimit import RateLimiter
from airflow_provider_searchapi.retry import RetryPolicy, is_retryable

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
        # tenacity controllers between calls. A controller serves one call at a time (it keeps the
        # call's state), and one made per call is a knot of reference cycles that only the garbage
        # collector frees: 35 objects a call, whose collections paused every request in flight for
        # up to 0.3 s in a run of thousands. Called as ``controller(fn)`` the call's state stays in
        # the call, and a successful call leaves no garbage (a failed one leaves its error's traceback,
        # which refers back to the call, to the collector).
        self._idle: list[Retrying] = []
        self._idle_async: list[AsyncRetrying] = []

    def run(self, prepare: Callable[[], Prepared], send: Callable[[Prepared], Result]) -> Result:
        def attempt() -> Result:
            prepared = prepare()
            self._limiter.acquire()
            return self._counted(send, prepared)

        try:
            retrying = self._idle.pop()
        except IndexError:  # none idle (checking first would race with other threads)
            retrying = self._retry_policy.retrying()
        try:
            return retrying(attempt)
        finally:
            self._idle.append(retrying)

    async def arun(
        self, prepare: Callable[[], Awaitable[Prepared]], send: Callable[[Prepared], Awaitable[Result]]
    ) -> Result:
        async def attempt() -> Result:
            prepared = await prepare()
            await self._limiter.aacquire()
            return await self._acounted(send, prepared)

        # The first attempt runs on its own: most calls succeed at once, and tenacity's controller
        # costs ~30 us a call (it asks ``inspect`` whether each of its steps is a coroutine function),
        # a few per cent of an image's CPU at 600 images/s. A failed first attempt is handed to
        # tenacity as its attempt one, so what follows is exactly what tenacity would have done.
        started = time.monotonic()
        try:
            return await attempt()
        except Exception as err:  # noqa: BLE001 - anything else is raised unchanged below
            if not is_retryable(err):  # the policy's own test (RetryPolicy's retry=)
                raise
            first_failure = err

        replayed = False

        # ``first_attempt_started`` is for the stop condition, which reads it from tenacity's record of
        # the call (retry.stop_after_total_delay); the attempt itself does not use it.
        async def attempt_after(first_attempt_started: float) -> Result:
            nonlocal replayed
            if not replayed:  # attempt one, as it went
                replayed = True
                raise first_failure
            return await attempt()

        try:
            retrying_async = self._idle_async.pop()
        except IndexError:
            retrying_async = self._retry_policy.async_retrying()
        try:
            return await retrying_async(attempt_after, first_attempt_started=started)
        finally:
            self._idle_async.append(retrying_async)

    def _counted(self, send: Callable[[Prepared], Result], prepared: Prepared) -> Result:
        self.sent += 1
        try:
            return send(prepared)
        except SearchApiHTTPError as err:
            self.failures[err.status] += 1
            raise

    async def _acounted(self, send: Callable[[Prepared], Awaitable[Result]], prepared: Prepared) -> Result:
        self.sent += 1
        try:
            return await send(prepared)
        except SearchApiHTTPError as err:
            self.failures[err.status] += 1
            raise


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
