"""The enrichment pipeline: sources → bounded concurrent searches → sinks.

One event loop runs ``max_concurrency`` workers that take sources from a queue; the listing, every
read and every commit run in threads. Every source ends as exactly one of: result rows, an error row,
or skipped because every sink already holds it. Sinks receive whole sources in batches of
``commit_every``.

A source holds a place from the moment a worker takes it until its rows are committed; there are
``max_concurrency + 2 * commit_every`` places (the searches in flight, a batch being committed and the
next one filling up). A crash therefore loses, and a re-run pays again for, at most that many searches.

With a :class:`~airflow_provider_searchapi.engine.ledger.Ledger`, a source is skipped or searched
again as the ledger and ``reprocess`` decide; the ledger records a batch only after every sink
committed it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from airflow_provider_searchapi.engine.ledger import (
    SEARCHED,
    Ledger,
    Plan,
    Reprocess,
    SqlLedger,
    fingerprint,
    outcomes,
    plan,
)
from airflow_provider_searchapi.engine.progress import Progress
from airflow_provider_searchapi.engine.records import (
    STAGE_API,
    STAGE_READ,
    STAGE_VALIDATE,
    error_row,
    failure_cause,
    result_rows,
)
from airflow_provider_searchapi.engine.settings import EnrichmentSettings, RunSummary
from airflow_provider_searchapi.engine.sinks import Batch, Sink
from airflow_provider_searchapi.engine.sources import SourceImage, read_image
from airflow_provider_searchapi.exceptions import (
    InvalidImageError,
    SearchApiAuthError,
    SearchApiHTTPError,
    SearchApiSetupError,
    is_setup_failure,
    status_hint,
)
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

log = logging.getLogger(__name__)

#: Sources taken from the listing per thread hop.
LISTING_CHUNK = 256
#: A run whose first images fail this many times for a reason of the setup (and none succeed) stops.
SETUP_FAILURES_TO_STOP = 5
#: Sources found held by every sink but unknown to the ledger, recorded together at most.
HELD_RECORD_CHUNK = 10_000
#: Seconds between the committer's looks at the pending batch's age (and at the progress log).
COMMIT_POLL_SECONDS = 0.2


class Enricher:
    """Runs the pipeline over sources into sinks with a hook.

    :param hook: the Search API hook (its connection's settings are read before the run).
    :param sinks: where rows go; a source is skipped when every sink already holds it.
    :param settings: how to search and commit.
    :param ledger: the ledger of done sources kept across runs (``None``: the sinks alone say what is done).
    """

    def __init__(
        self,
        hook: SearchApiHook,
        sinks: list[Sink],
        settings: EnrichmentSettings | None = None,
        ledger: Ledger | SqlLedger | None = None,
    ) -> None:
        self.hook = hook
        self.sinks = sinks
        self.settings = settings or EnrichmentSettings()
        self.ledger = ledger
        if ledger is None and self.settings.reprocess is Reprocess.FAILED:
            raise ValueError("reprocess='failed' needs a ledger (state_path) that remembers the failures")
        self.summary = RunSummary()
        self._batch = Batch()  # filling up
        self._full: collections.deque[Batch] = collections.deque()  # of commit_every sources, to commit
        self._batch_since = time.monotonic()
        self._commit_due = asyncio.Event()
        self._searching_ended = False
        self._places = asyncio.Semaphore(self.settings.max_uncommitted)
        self._done_per_sink: list[set[str]] = []
        self._listing_error: Exception | None = None
        self._setup_failures = 0
        self._committing: asyncio.Future[None] | None = None
        self._fingerprints: dict[str, str | None] = {}  # of the sources being searched, for the ledger
        self._held_unrecorded: list[tuple[str, str | None]] = []  # in every sink, not yet in the ledger
        self._recording = asyncio.Lock()  # one ledger write at a time

    def run(self, sources: Iterable[SourceImage]) -> RunSummary:
        """Search every source not already done and commit the rows; return the summary.

        Failures of single images are recorded, not raised; a sink that cannot commit stops the run
        (what was committed stays, and a re-run resumes after it). Call :meth:`arun` instead from
        code that already runs an event loop.
        """
        return asyncio.run(self.arun(sources))

    async def arun(self, sources: Iterable[SourceImage]) -> RunSummary:
        """:meth:`run` for async callers."""
        started = time.monotonic()
        stats = self.hook.stats
        attempts_before, throttled_before = stats.attempts, stats.throttled
        await self.hook.aget_config()  # read the connection (and fail on bad settings) before any work
        everything = self.settings.reprocess is Reprocess.ALL
        self._done_per_sink = [set() if everything else await asyncio.to_thread(s.done_sources) for s in self.sinks]
        done = set.intersection(*self._done_per_sink) if self._done_per_sink else set()
        if self.ledger is not None and not everything:
            await asyncio.to_thread(self.ledger.load)
        if done:
            log.info("Resuming: %d sources already done in the output are skipped", len(done))
        progress = Progress(self.summary, stats, interval=self.settings.progress_seconds)
        try:
            await self._run(sources, done, progress)
            if self.ledger is not None:
                await self._record(Batch())  # the sources found held by every sink
                await asyncio.to_thread(self.ledger.finish)
        finally:
            self.summary.requests = stats.attempts - attempts_before
            self.summary.throttled_429 = stats.throttled - throttled_before
            self.summary.elapsed_seconds = round(time.monotonic() - started, 3)
            self.summary.outputs = [sink.location() for sink in self.sinks]
            await self.hook.aclose()
        progress.log(final=True)
        for sink in self.sinks:
            await asyncio.to_thread(sink.finish, self.summary.to_dict())
        return self.summary

    async def _run(self, sources: Iterable[SourceImage], done: set[str], progress: Progress) -> None:
        queue: asyncio.Queue[SourceImage | None] = asyncio.Queue(maxsize=self.settings.max_concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._list(sources, done, queue, progress))
                committer = group.create_task(self._commit_loop(progress))
                workers = [group.create_task(self._work(queue)) for _ in range(self.settings.max_concurrency)]
                await asyncio.wait(workers)
                self._searching_ended = True
                self._commit_due.set()
                await committer
        except BaseExceptionGroup as failures:  # a sink failed, or the setup: the first cause is the run's
            first = failures.exceptions[0]
            if isinstance(first, SearchApiSetupError):  # the sinks work: commit what finished
                if self._committing is not None:
                    await asyncio.gather(self._committing, return_exceptions=True)
                for batch in [*self._full, self._batch]:
                    await self._commit(batch)
            raise first from None
        if self._listing_error is not None:
            raise self._listing_error

    async def _list(
        self,
        sources: Iterable[SourceImage],
        done: set[str],
        queue: asyncio.Queue[SourceImage | None],
        progress: Progress,
    ) -> None:
        """Feed the workers from the listing (read in threads, a chunk at a time), skipping done sources.

        A listing that fails ends the feed; the run fails with its error once what was listed before is
        searched and committed.
        """
        listing, left = iter(sources), self.settings.max_images
        while (left is None or left > 0) and self._listing_error is None:
            size = LISTING_CHUNK if left is None else min(LISTING_CHUNK, left)
            chunk = await asyncio.to_thread(self._take, listing, size)
            if not chunk:
                break
            for source in chunk:
                decision = self._plan(source, done)
                if decision.skips:
                    self.summary.listed += 1
                elif left != 0:
                    left = None if left is None else left - 1
                    self._admit(source, decision)
                    await queue.put(source)
            if len(self._held_unrecorded) >= HELD_RECORD_CHUNK:
                await self._record(Batch())
        progress.listing_done()
        for _ in range(self.settings.max_concurrency):
            await queue.put(None)

    def _plan(self, source: SourceImage, done: set[str]) -> Plan:
        """Skip or search ``source``, and count a skip."""
        held = source.uri in done
        if self.ledger is None:
            decision = Plan.SKIP_DONE if held else Plan.SEARCH
        else:
            entry = self.ledger.get(source.uri)
            decision = plan(entry, fingerprint(source), self.settings.reprocess, held=held)
            if held and entry is None:  # committed before the ledger knew it (e.g. a crash between the two)
                self._held_unrecorded.append((source.uri, fingerprint(source)))
        if decision is Plan.SKIP_DONE:
            self.summary.skipped_done += 1
        elif decision is Plan.SKIP_UNSEEN:
            self.summary.skipped_unseen += 1
        return decision

    def _admit(self, source: SourceImage, decision: Plan) -> None:
        """Note a source about to be searched: its fingerprint for the ledger, why it is searched again."""
        if self.ledger is None:
            return
        self._fingerprints[source.uri] = fingerprint(source)
        if decision is Plan.CHANGED:
            self.summary.changed += 1
            for already in self._done_per_sink:  # the new version's rows go to every sink, beside the old
                already.discard(source.uri)
        elif decision is Plan.RETRY:
            self.summary.retried += 1

    async def _record(self, batch: Batch) -> None:
        """Write the ledger's rows of a committed batch, and of the sources found held by every sink."""
        assert self.ledger is not None
        rows = [(uri, self._fingerprints.pop(uri, None), outcome) for uri, outcome in outcomes(batch)]
        rows += [(uri, fp, SEARCHED) for uri, fp in self._held_unrecorded]
        self._held_unrecorded = []
        async with self._recording:
            await asyncio.to_thread(self.ledger.record, rows)

    def _take(self, listing: Iterator[SourceImage], count: int) -> list[SourceImage]:
        """Up to ``count`` sources from the listing; a failure is kept for the end of the run."""
        taken: list[SourceImage] = []
        try:
            taken.extend(itertools.islice(listing, count))
        except Exception as err:  # noqa: BLE001 - raised by arun once what was listed is committed
            self._listing_error = err
        return taken

    async def _work(self, queue: asyncio.Queue[SourceImage | None]) -> None:
        while (source := await queue.get()) is not None:
            await self._places.acquire()  # released once the source's rows are committed
            self.summary.listed += 1
            await self._search(source)

    async def _search(self, source: SourceImage) -> None:
        stage, size = STAGE_READ, None
        try:
            query: dict[str, Any]
            if source.is_url:
                query = {"url": source.uri}
            else:
                data, size = await self._read(source)
                query = {"image": data}
            stage = STAGE_API
            settings = self.settings
            pages = [
                page
                async for page in self.hook.aiter_pages(
                    **query, site=settings.site, family_mode=settings.family_mode, max_pages=settings.max_pages
                )
            ]
        except Exception as err:  # noqa: BLE001 - every failure is recorded against its source
            stage = STAGE_VALIDATE if isinstance(err, InvalidImageError) else stage
            self._batch.errors.append(error_row(source, stage, err))
            self.summary.count_failure(failure_cause(err))
            failure: Exception | None = err
        else:
            failure = None
            rows = result_rows(source, pages, size)
            self._batch.results.extend(rows)
            self.summary.searched += 1
            self.summary.result_rows += len(rows)
        if not self._batch.sources:
            self._batch_since = time.monotonic()  # a batch's age counts from its first source
        self._batch.sources += 1
        if self._batch.sources >= self.settings.batch_size:
            self._full.append(self._batch)
            self._batch = Batch()
            self._commit_due.set()
        if failure is not None and is_setup_failure(failure) and not self.summary.searched:
            self._setup_failures += 1
            if self._setup_failures >= SETUP_FAILURES_TO_STOP:
                raise self._setup_error(failure)

    def _setup_error(self, err: Exception) -> SearchApiSetupError:
        assert isinstance(err, SearchApiHTTPError)
        config = self.hook.config
        endpoint = config.grpc_endpoint if config.transport == "grpc" else config.endpoint
        where = "" if isinstance(err, SearchApiAuthError) else f" (endpoint {endpoint}, folder {config.folder_id})"
        return SearchApiSetupError(
            f"Stopped: the first {self._setup_failures} images all failed and none succeeded, so the setup is "
            f"at fault, not the images: {err}{where}{status_hint(err.status)} What finished is committed; "
            "re-run once the connection is fixed.",
            err,
        )

    async def _read(self, source: SourceImage) -> tuple[bytes, int]:
        """Read (and downscale) in a worker thread, within ``read_timeout``."""
        settings = self.settings
        reading = asyncio.to_thread(
            read_image, source, downscale=settings.downscale_oversized, follow_symlinks=settings.follow_symlinks
        )
        try:
            async with asyncio.timeout(settings.read_timeout):
                return await reading
        except TimeoutError:
            raise TimeoutError(f"{source.uri}: not read within {settings.read_timeout:g} s") from None

    async def _commit_loop(self, progress: Progress) -> None:
        """Commit finished sources when enough of them wait, the oldest waited long enough, or the end came."""
        while True:
            try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the task's cancellation
                async with asyncio.timeout(COMMIT_POLL_SECONDS):
                    await self._commit_due.wait()
            except TimeoutError:
                pass
            self._commit_due.clear()
            progress.maybe_log()
            while self._full:
                await self._commit_through(self._full.popleft())
            aged = time.monotonic() - self._batch_since >= self.settings.commit_seconds
            if self._batch.sources and (aged or self._searching_ended):
                batch, self._batch = self._batch, Batch()
                await self._commit_through(batch)
            if self._searching_ended and not self._batch.sources and not self._full:
                return

    async def _commit_through(self, batch: Batch) -> None:
        """Commit ``batch`` in a task of its own that a cancelled committer leaves to finish: a batch
        taken off the queue is committed whole (or its commit fails), never dropped half-way."""
        self._committing = asyncio.ensure_future(self._commit(batch))
        await asyncio.shield(self._committing)

    async def _commit(self, batch: Batch) -> None:
        for sink, already in zip(self.sinks, self._done_per_sink, strict=True):
            await asyncio.to_thread(sink.write, batch.without(already) if already else batch)
        if self.ledger is not None:
            await self._record(batch)
        for _ in range(batch.sources):
            self._places.release()
