"""The enrichment pipeline: sources → bounded concurrent searches → sinks.

``max_concurrency`` workers take sources from a queue; the listing, every read (a thread per worker)
and every commit run in threads. Every source ends as exactly one of: result rows, an error row, or
skipped as done. Sinks receive whole sources in batches of ``commit_every``.

A source holds a place from the moment a worker takes it until its rows are committed. There are
``max_concurrency + 2 * commit_every`` places (the searches in flight, a batch being committed and
the next one filling up), so a crash makes a re-run pay again for that many searches at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_searchapi.aio import to_thread_in
from airflow_provider_searchapi.engine.ledger import BaseLedger, Plan, Reprocess
from airflow_provider_searchapi.engine.progress import Progress
from airflow_provider_searchapi.engine.records import STAGE_API, STAGE_READ, SetupBreaker, error_row, result_rows
from airflow_provider_searchapi.engine.settings import EnrichmentSettings, RunSummary
from airflow_provider_searchapi.engine.sinks import Batch, Batches, Sink
from airflow_provider_searchapi.engine.sources import SourceImage, read_image
from airflow_provider_searchapi.exceptions import SearchApiSetupError
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

log = logging.getLogger(__name__)

#: Sources taken from the listing per thread hop.
LISTING_CHUNK = 256
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
        ledger: BaseLedger | None = None,
    ) -> None:
        self.hook = hook
        self.sinks = sinks
        self.settings = settings or EnrichmentSettings()
        self.ledger = ledger
        if ledger is None and self.settings.reprocess is Reprocess.FAILED:
            raise ValueError("reprocess='failed' needs a ledger (state_path) that remembers the failures")
        self.summary = RunSummary()
        self._queue: asyncio.Queue[SourceImage | None] = asyncio.Queue(maxsize=self.settings.max_concurrency)
        self._batches = Batches(self.settings.batch_size)
        self._commit_due = asyncio.Event()
        self._searching_ended = False
        self._places = asyncio.Semaphore(self.settings.max_uncommitted)
        self._done_per_sink: list[set[str]] = []
        self._listing_error: Exception | None = None
        self._breaker = SetupBreaker()
        self._committing: asyncio.Task[None] | None = None
        self._recording = asyncio.Lock()  # one ledger write at a time

    def run(self, sources: Iterable[SourceImage]) -> RunSummary:
        """Search every source not already done and commit the rows; return the summary.

        Failures of single images are recorded, not raised; an output that cannot be written fails the
        run before any search, and one that fails later stops it (what was committed stays, and a re-run
        resumes after it). From code that already runs an event loop, await :meth:`arun` instead.

        :param sources: the images, e.g. from :func:`~airflow_provider_searchapi.engine.list_images`.
        """
        return asyncio.run(self.arun(sources))

    async def arun(self, sources: Iterable[SourceImage]) -> RunSummary:
        """:meth:`run` for async callers."""
        self._progress = Progress(self.summary, self.hook.stats, interval=self.settings.progress_seconds)
        await self.hook.aget_config()  # read the connection (and fail on bad settings) before any work
        for output in (*self.sinks, self.ledger):  # and fail on an output that cannot be written
            if hasattr(output, "check_writable"):  # a sink of one's own may have none
                await asyncio.to_thread(output.check_writable)
        everything = self.settings.reprocess is Reprocess.ALL
        if self.ledger is not None:
            self.ledger.start_run()
            if not everything:
                await asyncio.to_thread(self.ledger.load)
        # after load: a ledger read from a sink's tables (SqlLedger) tells what it holds without a second scan
        ask = self.ledger.done_sources if self.ledger is not None else lambda sink: sink.done_sources()
        self._done_per_sink = [set() if everything else await asyncio.to_thread(ask, s) for s in self.sinks]
        done = set.intersection(*self._done_per_sink) if self._done_per_sink else set()
        if done:
            log.info("Resuming: %d sources already done in the output are skipped", len(done))
        self._readers = ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix="searchapi-read")
        try:
            await self._run(sources, done)
            if self.ledger is not None:
                await self._record(Batch())  # the sources found held by every sink
                await asyncio.to_thread(self.ledger.finish)
        finally:
            self._readers.shutdown(wait=False)  # a read past its timeout is not waited for
            self._progress.count()
            self.summary.outputs = [sink.location() for sink in self.sinks]
            await self.hook.aclose()
        self._progress.log(final=True)
        for sink in self.sinks:
            await asyncio.to_thread(sink.finish, self.summary.to_dict())
        return self.summary

    async def _run(self, sources: Iterable[SourceImage], done: set[str]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._list(sources, done))
                committer = group.create_task(self._commit_loop())
                workers = [group.create_task(self._work()) for _ in range(self.settings.max_concurrency)]
                await asyncio.wait(workers)
                self._searching_ended = True
                self._commit_due.set()
                await committer
        except BaseExceptionGroup as failures:  # a sink failed, the setup, or a timeout: the first is the run's
            first = failures.exceptions[0]
            if isinstance(first, SearchApiSetupError) or not isinstance(first, Exception):  # the sinks work
                await self._commit_finished()
            raise first from None
        except BaseException:  # cancelled: Airflow's execution_timeout raised in the loop, Ctrl-C
            await self._commit_finished()
            raise
        if self._listing_error is not None:
            raise self._listing_error

    async def _commit_finished(self) -> None:
        """Commit the sources searched so far (they are paid for) when the run stops early."""
        if self._committing is not None:
            await asyncio.gather(self._committing, return_exceptions=True)
        while (batch := self._batches.take(max_age=0)) is not None:
            await self._commit(batch)

    async def _list(self, sources: Iterable[SourceImage], done: set[str]) -> None:
        """Feed the workers from the listing, read in threads a chunk at a time, skipping done sources.
        A listing that fails ends the feed; the run fails with its error once what was listed is committed."""
        listing = iter(sources)
        left = math.inf if self.settings.max_images is None else self.settings.max_images
        while left > 0 and self._listing_error is None:
            chunk: list[SourceImage] = []
            try:  # what the chunk took before the listing failed stays in it
                await asyncio.to_thread(chunk.extend, itertools.islice(listing, min(LISTING_CHUNK, left)))
            except Exception as err:  # noqa: BLE001 - raised by arun once what was listed is committed
                self._listing_error = err
            if not chunk:
                break
            for source in chunk:
                if self._plan(source, done).skips:
                    self.summary.listed += 1
                else:
                    left -= 1
                    await self._queue.put(source)
            if self.ledger is not None and len(self.ledger.held) >= HELD_RECORD_CHUNK:
                await self._record(Batch())
        self._progress.listing_complete = True
        for _ in range(self.settings.max_concurrency):
            await self._queue.put(None)

    def _plan(self, source: SourceImage, done: set[str]) -> Plan:
        """Skip or search ``source``, and count why."""
        held = source.uri in done
        if self.ledger is None:
            decision = Plan.SKIP_DONE if held else Plan.SEARCH
        else:
            decision = self.ledger.plan(source, self.settings.reprocess, held=held)
        self.summary.count_plan(decision)
        return decision

    async def _work(self) -> None:
        while (source := await self._queue.get()) is not None:
            await self._places.acquire()  # released once the source's rows are committed
            self.summary.listed += 1
            await self._search(source)

    async def _search(self, source: SourceImage) -> None:
        stage, size, settings = STAGE_READ, None, self.settings
        try:
            data, size = (None, None) if source.is_url else await self._read(source)
            query = {"url": source.uri} if source.is_url else {"image": data}
            stage = STAGE_API
            options = {"site": settings.site, "family_mode": settings.family_mode, "max_pages": settings.max_pages}
            pages = [page async for page in self.hook.aiter_pages(**query, **options)]
        except Exception as err:  # noqa: BLE001 - every failure is recorded against its source
            row = error_row(source, stage, err)
            if self._batches.add(errors=[row]):
                self._commit_due.set()
            self.summary.count_failure(err, refused=not row["retryable"])
            self._breaker.check(err, searched=self.summary.searched, config=self.hook.config)
        else:
            rows = result_rows(source, pages, size)
            self.summary.searched += 1
            self.summary.result_rows += len(rows)
            if self._batches.add(results=rows):
                self._commit_due.set()

    async def _read(self, source: SourceImage) -> tuple[bytes, int]:
        """Read (and downscale) in a reader thread, within ``read_timeout``."""
        settings = self.settings
        options = {"downscale": settings.downscale_oversized, "follow_symlinks": settings.follow_symlinks}
        try:
            async with asyncio.timeout(settings.read_timeout):
                return await to_thread_in(self._readers, read_image, source, **options)
        except TimeoutError:
            raise TimeoutError(f"{source.uri}: not read within {settings.read_timeout:g} s") from None

    async def _commit_loop(self) -> None:
        """Commit finished sources when enough of them wait, the oldest waited long enough, or the end came."""
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the task's cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COMMIT_POLL_SECONDS):
                    await self._commit_due.wait()
            self._commit_due.clear()
            self._progress.maybe_log()
            ended = self._searching_ended
            while (batch := self._batches.take(0 if ended else self.settings.commit_seconds)) is not None:
                # in a task that a cancelled committer leaves to finish: never dropped half-way
                self._committing = asyncio.create_task(self._commit(batch))
                await asyncio.shield(self._committing)
            if ended:
                return

    async def _commit(self, batch: Batch) -> None:
        for sink, already in zip(self.sinks, self._done_per_sink, strict=True):
            await asyncio.to_thread(sink.write, batch.without(already) if already else batch)
        if self.ledger is not None:
            await self._record(batch)
        for _ in range(batch.sources):
            self._places.release()

    async def _record(self, batch: Batch) -> None:
        """Write the ledger's rows of a committed batch, and of the sources found held by every sink."""
        rows = self.ledger.rows(batch)
        async with self._recording:
            await asyncio.to_thread(self.ledger.record, rows)
