"""How Search API calls are retried, built on tenacity, and the counters every call fills in.

Retried: 429 (waiting as ``Retry-After`` says, when it says), 500/502/503/504, timeouts and connection
failures, with exponential backoff and full jitter. A 429 is not a fault of the request: it is waited
out and retried as long as the call's time bound allows, without counting against the bound on
attempts that the other failures have. Never retried: 400, 401 (the auth flow already refreshed once),
403, 404 and unreadable answers.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from airflow_provider_searchapi.exceptions import SearchApiHTTPError
from airflow_provider_searchapi.ratelimit import Limiter

log = logging.getLogger(__name__)

Prepared = TypeVar("Prepared")
Result = TypeVar("Result")


def is_retryable(err: BaseException) -> bool:
    """Whether a failed call is worth another attempt."""
    return isinstance(err, SearchApiHTTPError) and err.retryable


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class wait_retry_after(wait_base):  # noqa: N801 - tenacity's naming style
    """Wait what the server asked for in ``Retry-After`` (at most ``cap``); otherwise ``fallback``."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        err = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(err, "retry_after", None)
        if asked is not None and asked >= 0:
            return min(float(asked), self.cap)
        return self.fallback(retry_state)


def is_throttled(err: BaseException | None) -> bool:
    """Whether a failure is the server's 429 (quota exceeded)."""
    return isinstance(err, SearchApiHTTPError) and err.status == 429


class stop_after_faults(stop_base):  # noqa: N801 - tenacity's naming style
    """Stop once ``limit`` attempts of one call failed for another reason than a 429 (make one per call)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.faults = 0

    def __call__(self, retry_state: RetryCallState) -> bool:
        if not is_throttled(retry_state.outcome.exception() if retry_state.outcome else None):
            self.faults += 1
        return self.faults >= self.limit


@dataclass
class CallStats:
    """Counters of a hook's calls: attempts counted as they are sent, failures by tenacity's retry test.

    :param attempts: attempts sent, each counted against the quota.
    :param failures: failed attempts by HTTP status (0: no answer), retried or not.
    """

    attempts: int = 0
    failures: collections.Counter[int] = field(default_factory=collections.Counter)

    @property
    def throttled(self) -> int:
        """Attempts refused with 429 (quota exceeded)."""
        return self.failures[429]

    def _judge(self, err: BaseException) -> bool:
        """tenacity's retry test: count the failure, then tell whether it is worth another attempt."""
        if isinstance(err, SearchApiHTTPError):
            self.failures[err.status] += 1
        return is_retryable(err)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a call.

    :param max_attempts: attempts that fail for another reason than a 429, at most (the first included).
    :param max_total_seconds: no new attempt starts after this many seconds since the first began; this
        alone bounds how long a call waits out 429s.
    :param backoff_base: seconds of the first backoff step (doubling after each failure, with jitter).
    :param backoff_max: longest single wait.
    """

    max_attempts: int = 8
    max_total_seconds: float = 600.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def _kwargs(self, stats: CallStats | None = None) -> dict[str, Any]:
        return {
            "retry": retry_if_exception(stats._judge if stats else is_retryable),
            "stop": stop_after_faults(self.max_attempts) | stop_after_delay(self.max_total_seconds),
            "wait": wait_retry_after(
                wait_random_exponential(multiplier=self.backoff_base, max=self.backoff_max),
                cap=self.backoff_max * 2,
            ),
            "before_sleep": _log_retry,
            "reraise": True,
        }

    def retrying(self, stats: CallStats | None = None) -> Retrying:
        """A tenacity controller for one sync call."""
        return Retrying(**self._kwargs(stats))

    def async_retrying(self, stats: CallStats | None = None) -> AsyncRetrying:
        """A tenacity controller for one async call."""
        return AsyncRetrying(**self._kwargs(stats))


class Caller:
    """Runs a transport's attempts under the retry policy. Each attempt first prepares (gets the
    credential: rarely slow, when a token is minted), then waits for a start slot of the rate limiter,
    then sends what was prepared; so a slow preparation never bunches the starts that follow it. A 429
    is reported to the limiter, which may slow down.

    :param limiter: the rate limiter every attempt waits on.
    :param policy: how failed attempts are retried.
    :param stats: the counters to fill in.
    """

    def __init__(self, limiter: Limiter, policy: RetryPolicy, stats: CallStats) -> None:
        self.limiter = limiter
        self.policy = policy
        self.stats = stats

    def call(self, prepare: Callable[[], Prepared], send: Callable[[Prepared], Result]) -> Result:
        def attempt() -> Result:
            prepared = prepare()
            self.limiter.acquire()
            self.stats.attempts += 1
            try:
                return send(prepared)
            except SearchApiHTTPError as err:
                self._report(err)
                raise

        return self.policy.retrying(self.stats)(attempt)

    async def acall(
        self, prepare: Callable[[], Awaitable[Prepared]], send: Callable[[Prepared], Awaitable[Result]]
    ) -> Result:
        async def attempt() -> Result:
            prepared = await prepare()
            await self.limiter.aacquire()
            self.stats.attempts += 1
            try:
                return await send(prepared)
            except SearchApiHTTPError as err:
                self._report(err)
                raise

        return await self.policy.async_retrying(self.stats)(attempt)

    def _report(self, err: SearchApiHTTPError) -> None:
        if is_throttled(err):
            self.limiter.throttled(err.retry_after)


def _log_retry(state: RetryCallState) -> None:
    err = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s; attempt %d failed, retrying in %.1f s", err, state.attempt_number, wait)
