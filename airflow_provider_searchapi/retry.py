"""The retry policy of Search API calls, built on tenacity.

Retried: 429 (waiting as ``Retry-After`` says, when it says), 500/502/503/504, timeouts and connection
failures, with exponential backoff, full jitter and a bound on attempts and total time. Never retried:
400, 401 (the auth flow already refreshed once), 403, 404 and unreadable answers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from airflow_provider_searchapi.exceptions import SearchApiHTTPError

log = logging.getLogger(__name__)


def is_retryable(err: BaseException) -> bool:
    """Whether a failed call is worth another attempt."""
    return isinstance(err, SearchApiHTTPError) and err.retryable


class wait_retry_after(wait_base):  # noqa: N801 - tenacity's naming style
    """Wait what the server asked for in ``Retry-After``; otherwise fall back to ``fallback``."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        err = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(err, "retry_after", None)
        if asked is not None and asked >= 0:
            return min(float(asked), self.cap)
        return self.fallback(retry_state)


class stop_after_total_delay(stop_base):  # noqa: N801 - tenacity's naming style
    """Stop once ``seconds`` passed since the call's first attempt began: tenacity's own start, or the
    ``first_attempt_started`` (a ``time.monotonic()``) that the call was given, when its first attempt
    ran before tenacity took over (see ``Attempts.arun``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, retry_state: RetryCallState) -> bool:
        started = retry_state.kwargs.get("first_attempt_started", retry_state.start_time)
        ended = retry_state.outcome_timestamp or time.monotonic()
        return ended - started >= self.seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a call.

    :param max_attempts: attempts in all, the first included.
    :param max_total_seconds: no new attempt starts after this many seconds since the first.
    :param backoff_base: seconds of the first backoff step (doubling after each failure, with jitter).
    :param backoff_max: longest single wait.
    """

    max_attempts: int = 8
    max_total_seconds: float = 300.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def _kwargs(self) -> dict:
        return {
            "retry": retry_if_exception(is_retryable),
            "stop": stop_after_attempt(self.max_attempts) | stop_after_total_delay(self.max_total_seconds),
            "wait": wait_retry_after(
                wait_random_exponential(multiplier=self.backoff_base, max=self.backoff_max),
                cap=self.backoff_max * 2,
            ),
            "before_sleep": _log_retry,
            "reraise": True,
        }

    def retrying(self) -> Retrying:
        """A tenacity controller for sync calls."""
        return Retrying(**self._kwargs())

    def async_retrying(self) -> AsyncRetrying:
        """A tenacity controller for async calls."""
        return AsyncRetrying(**self._kwargs())


def _log_retry(state: RetryCallState) -> None:
    err = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s; attempt %d failed, retrying in %.1f s", err, state.attempt_number, wait)
