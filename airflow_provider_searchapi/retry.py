"""How Search API calls are retried, with tenacity, and the counters every call fills in.

Retried: 429 (waiting as ``Retry-After`` says, when it says), 500/502/503/504, timeouts and connection
failures, with exponential backoff and full jitter. A 429 is not a fault of the request: it does not
count against ``max_attempts`` and is retried as long as ``max_total_seconds`` allows. A 401 is retried
once with a new token, when the credential mints them. Never retried: 400, 403, 404, another 401 and
unreadable answers.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
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

from airflow_provider_searchapi.auth import RefreshingTokenAuth, aauthorization_header, authorization_header
from airflow_provider_searchapi.exceptions import SearchApiAuthError, SearchApiHTTPError
from airflow_provider_searchapi.ratelimit import Limiter

log = logging.getLogger(__name__)

Result = TypeVar("Result")
Controller = TypeVar("Controller", Retrying, AsyncRetrying)


def is_retryable(err: BaseException) -> bool:
    """Whether a failed call is worth another attempt."""
    return isinstance(err, SearchApiHTTPError) and err.retryable


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (a number of seconds or an HTTP date); ``None`` if unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class wait_retry_after(wait_base):  # noqa: N801 - tenacity's naming style
    """Wait what the server asked for in ``Retry-After`` (at most ``cap``); otherwise as ``fallback`` says."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        asked = getattr(_error_of(retry_state), "retry_after", None)
        return self.fallback(retry_state) if asked is None else min(float(asked), self.cap)


class stop_after_faults(stop_base):  # noqa: N801 - tenacity's naming style
    """Stop once ``limit`` attempts of a call failed for another reason than a 429 or the 401 that makes
    the token refresh (one per call: it counts)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.faults = 0

    def __call__(self, retry_state: RetryCallState) -> bool:
        if getattr(_error_of(retry_state), "status", None) not in (401, 429):  # a 401 retried is the first
            self.faults += 1
        return self.faults >= self.limit


@dataclass
class CallStats:
    """Counters of a hook's calls.

    :param attempts: attempts sent, each counted against the quota.
    :param failures: failed attempts by HTTP status (0: no answer), retried or not.
    """

    attempts: int = 0
    failures: collections.Counter[int] = field(default_factory=collections.Counter)

    @property
    def throttled(self) -> int:
        """Attempts refused with 429 (quota exceeded)."""
        return self.failures[429]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a call.

    :param max_attempts: attempts that fail for another reason than a 429 or a 401 refreshing the token,
        at most (the first included).
    :param max_total_seconds: no new attempt starts after this many seconds since the first began; this
        alone bounds how long a call waits out 429s.
    :param backoff_base: seconds of the first backoff step (doubling after each failure, with jitter).
    :param backoff_max: longest single backoff (a ``Retry-After`` may ask for up to twice as long).
    """

    max_attempts: int = 8
    max_total_seconds: float = 600.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0


#: When someone waits for the answer (a shell, the UI's *Test connection*): fewer, shorter retries than a task's.
INTERACTIVE_RETRY_POLICY = RetryPolicy(max_attempts=3, max_total_seconds=60, backoff_max=5)


class Caller:
    """Runs a transport's attempts under the retry policy. Each attempt first gets the credential's
    ``Authorization`` value (rarely slow, when a token is minted), then waits for a start slot of the
    rate limiter, then sends; so a slow token exchange never bunches the starts that follow it, and
    every request sent, the one after a 401 too, has its own slot. A 429 is reported to the limiter,
    which may slow down.

    :param limiter: the rate limiter every attempt waits on.
    :param policy: how failed attempts are retried.
    :param stats: the counters to fill in.
    """

    def __init__(self, limiter: Limiter, policy: RetryPolicy, stats: CallStats) -> None:
        self.limiter = limiter
        self.policy = policy
        self.stats = stats

    def call(self, auth: httpx.Auth, send: Callable[[str], Result]) -> Result:
        """Send with retries; ``send`` gets the ``Authorization`` value of the attempt.

        :param auth: the connection's credential.
        :param send: sends one attempt.
        """
        refused: list[str] = []  # the value a 401 refused: the next attempts get a new token

        def attempt() -> Result:
            header = authorization_header(auth, stale=refused[0] if refused else None)
            self.limiter.acquire()
            self.stats.attempts += 1
            try:
                return send(header)
            except SearchApiHTTPError as err:
                _refresh_once(err, auth, header, refused)
                raise

        return self._retrying(Retrying)(attempt)

    async def acall(self, auth: httpx.Auth, send: Callable[[str], Awaitable[Result]]) -> Result:
        """Async twin of :meth:`call`."""
        refused: list[str] = []

        async def attempt() -> Result:
            header = await aauthorization_header(auth, stale=refused[0] if refused else None)
            await self.limiter.aacquire()
            self.stats.attempts += 1
            try:
                return await send(header)
            except SearchApiHTTPError as err:
                _refresh_once(err, auth, header, refused)
                raise

        return await self._retrying(AsyncRetrying)(attempt)

    def _retrying(self, controller: type[Controller]) -> Controller:
        """A tenacity controller for one call (its count of faults is its own)."""
        policy = self.policy
        return controller(
            retry=retry_if_exception(self._failed),
            stop=stop_after_faults(policy.max_attempts) | stop_after_delay(policy.max_total_seconds),
            wait=wait_retry_after(
                wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_max),
                cap=policy.backoff_max * 2,
            ),
            before_sleep=_log_retry,
            reraise=True,
        )

    def _failed(self, err: BaseException) -> bool:
        """tenacity's retry test: count the failure, tell the limiter of a 429, say whether to try again."""
        if isinstance(err, SearchApiHTTPError):
            self.stats.failures[err.status] += 1
            if err.status == 429 and not isinstance(err, SearchApiAuthError):  # IAM's quota is not the folder's
                # Held no longer than a call may last: a far Retry-After (or a lagging clock's HTTP date)
                # would stall every call of the process past max_total_seconds.
                asked = err.retry_after
                self.limiter.throttled(None if asked is None else min(asked, self.policy.max_total_seconds))
        return is_retryable(err)


def _refresh_once(err: SearchApiHTTPError, auth: httpx.Auth, header: str, refused: list[str]) -> None:
    """Make a call's first 401 retryable when the credential mints tokens (the next attempt refreshes)."""
    if err.status == 401 and not refused and isinstance(auth, RefreshingTokenAuth):
        refused.append(header)
        err.retryable = True


def _error_of(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None


def _log_retry(state: RetryCallState) -> None:
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s; attempt %d failed, retrying in %.1f s", _error_of(state), state.attempt_number, wait)
