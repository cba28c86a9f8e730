"""Progress log lines: done/total, rate, ETA, failures and 429s, every few seconds and at the end."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_searchapi.engine.settings import RunSummary
    from airflow_provider_searchapi.retry import CallStats

log = logging.getLogger("airflow_provider_searchapi.progress")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Keeps a run's summary up to date with the hook's counters and the time, and logs it.

    :param summary: the run's counters.
    :param stats: the hook's call counters (attempts sent, 429s).
    :param interval: seconds between lines.
    """

    def __init__(self, summary: RunSummary, stats: CallStats, *, interval: float = 10.0) -> None:
        self.summary = summary
        self.stats = stats
        self.interval = interval
        self._attempts_before, self._throttled_before = stats.attempts, stats.throttled
        self.started = self.last = time.monotonic()
        self.listing_complete = False

    def count(self) -> None:
        """Set the summary's requests, 429s and elapsed time."""
        self.summary.requests = self.stats.attempts - self._attempts_before
        self.summary.throttled_429 = self.stats.throttled - self._throttled_before
        self.summary.elapsed_seconds = round(time.monotonic() - self.started, 3)

    def maybe_log(self) -> None:
        if time.monotonic() - self.last >= self.interval:
            self.log()

    def log(self, *, final: bool = False) -> None:
        if not final:  # the final figures were counted when the run ended, before its connections closed
            self.count()
        self.last = time.monotonic()
        s = self.summary
        done, to_do = s.processed, s.listed - s.skipped_done
        rate = done / max(s.elapsed_seconds, 1e-3)
        if self.listing_complete:
            total = f"{to_do:,}"
            eta = _duration((to_do - done) / rate) if rate > 0 and not final else "-"
        else:
            total, eta = f"{to_do:,}+ (listing)", "?"
        log.info(
            "%s %s/%s images (%.1f/s, ETA %s, elapsed %s): %d failed%s, %d skipped as done, %d result rows, "
            "%d requests, %d throttled (429)",
            "Finished:" if final else "Progress:",
            f"{done:,}",
            total,
            rate,
            eta,
            _duration(s.elapsed_seconds),
            s.failed,
            f" ({s.top_causes()})" if s.failure_causes else "",
            s.skipped_done,
            s.result_rows,
            s.requests,
            s.throttled_429,
        )
