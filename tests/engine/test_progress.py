"""Progress lines say done/total, rate, ETA, failures and 429s."""

from __future__ import annotations

import collections
import logging

import pytest

from airflow_provider_searchapi.engine.pipeline import RunSummary
from airflow_provider_searchapi.engine.progress import Progress
from airflow_provider_searchapi.retry import CallStats


def _stats_during_run(progress: Progress) -> None:
    """The hook's counters as the run goes on: 130 attempts, 7 answered 429."""
    progress.stats.attempts += 130
    progress.stats.failures.update({429: 7, 503: 2})


@pytest.fixture
def lines():
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("airflow_provider_searchapi.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)


def test_progress_line_while_listing_and_after(lines):
    summary = RunSummary(listed=120, skipped_done=20, searched=45, failed=5, result_rows=900)
    progress = Progress(summary, CallStats(attempts=12, failures=collections.Counter({429: 1})), interval=10)
    _stats_during_run(progress)
    progress.started -= 10.0  # ten seconds into the run
    progress.log()
    assert "50/100+ (listing) images" in lines[-1] and "ETA ?" in lines[-1]
    progress.listing_complete = True
    progress.log()
    line = lines[-1]
    assert line.startswith("Progress: 50/100 images (5.0/s, ETA 0m10s")
    assert "5 failed, 20 skipped as done, 900 result rows, 130 requests, 7 throttled (429)" in line
    progress.log(final=True)
    assert lines[-1].startswith("Finished: 50/100")
    summary.failure_causes.update({'Search API 403: Permission denied to folder "x".': 4, "invalid image: empty": 1})
    progress.log()
    assert '5 failed (4 × Search API 403: Permission denied to folder "x".; 1 × invalid image: empty)' in lines[-1]


def test_lines_come_every_interval_only(lines):
    progress = Progress(RunSummary(), CallStats(), interval=3600)
    progress.maybe_log()
    assert lines == []
    progress.last -= 3600
    progress.maybe_log()
    assert len(lines) == 1
