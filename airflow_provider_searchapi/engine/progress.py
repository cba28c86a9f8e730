"""Progress log lines: done/total, rate, ETA, failures and 429s, every few seconds and at the end."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_searchapi.engine.pipeline import RunSummary
    from airflow_provider_searchapi.retry import CallStats

log = logging.getLogger("airflow_provider_searchapi.progress")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Logs a line every ``interval`` seconds (when asked) and a last one at the end.

    :param summary: the run's counters.
    :param stats: the hook's call counters (attempts sent, 429s).
    :param interval: seconds between lines.
    """

    def __init__(self, summary: RunSummary, stats: CallStats, *, interval: float = 10.0) -> None:
        self.summary = summary
        self.stats = stats
        self._attempts_before, self._throttled_before = stats.attempts, stats.throttled
        self.interval = interval
        self.started = time.monotonic()
        self.last = self.started
        self.listing_complete = False

    def listing_done(self) -> None:
        self.listing_complete = True

    def maybe_log(self) -> None:
        if time.monotonic() - self.last >= self.interval:
            self.log()

    def log(self, *, final: bool = False) -> None:
        now = time.monotonic()
        self.last = now
        s = self.summary
        elapsed = max(now - self.started, 1e-9)
        done, to_do = s.processed, s.listed - s.skipped_done
        rate = done / elapsed
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
            _duration(elapsed),
            s.failed,
            f" ({s.top_causes()})" if s.failure_causes else "",
            s.skipped_done,
            s.result_rows,
            self.stats.attempts - self._attempts_before,
            self.stats.throttled - self._throttled_before,
        )
