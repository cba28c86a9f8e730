"""The enrichment pipeline: sources → bounded concurrent searches → sinks.

One event loop runs the searches; listings, reads and commits run in threads, but for reads from and
commits to a fast local disk (or memory), which run on the loop. Every source ends as exactly one of:
result rows, an error row, or skipped because a sink already holds it. Sinks receive whole sources in
batches.

At most ``max_concurrency`` images are read and searched at once (their bytes are in memory only
then). A searched image then waits, as a few rows, for a commit: one batch of ``commit_after`` may be
committing while the next fills up, so the images started but not yet committed are at most
``max_concurrency + 2 * commit_after`` (twice ``max_concurrency`` with the default commit size). So
a crash loses (and a re-run pays again for) at most that many searches, and commits hold searches
back only when the sinks are slower than the API.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from airflow_provider_searchapi.engine.downscale import downscale_to_limit
from airflow_provider_searchapi.engine.progress import Progress
from airflow_provider_searchapi.engine.records import (
    STAGE_API,
    STAGE_READ,
    STAGE_VALIDATE,
    error_row,
    result_rows,
)
from airflow_provider_searchapi.engine.sinks import Batch, Sink
from airflow_provider_searchapi.engine.sources import SourceImage
from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.images import check_image
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES, FamilyMode

log = logging.getLogger(__name__)

#: Largest object read for downscaling; anything larger is refused unread.
MAX_READ_BYTES_FOR_DOWNSCALE = 64 * 1024 * 1024
_LISTING_CHUNK = 256
#: Local files listed at most this large are read on the event loop (see Enricher._read_image)...
INLINE_READ_MAX_BYTES = 1024 * 1024
#: ...until one read takes longer than this: then the run's reads go to threads.
SLOW_LOCAL_READ_SECONDS = 0.01
#: A commit to a local sink taking longer than this sends the run's later commits to threads.
SLOW_LOCAL_COMMIT_SECONDS = 0.01
#: Seconds between the committer's looks at the pending batch's age (and at the progress log).
COMMIT_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class EnrichmentSettings:
    """How the pipeline searches and commits.

    :param max_pages: result pages per image (page 0 uploads; later pages reuse the CBIR id).
    :param site: only results from this site.
    :param family_mode: adult-content filter.
    :param max_concurrency: images read and searched at once (held in memory) at most.
    :param max_images: search at most this many images in this run (skipped ones do not count).
    :param downscale_oversized: shrink images over 3 MiB with Pillow instead of recording an error.
    :param batch_sources: commit to the sinks once this many sources are finished (at most
        ``max_concurrency``; default half of it); also what may wait for a commit beyond
        ``max_concurrency``…
    :param batch_seconds: …or once the oldest finished source waited this many seconds.
    :param progress_seconds: seconds between progress log lines.
    :param freeze_older_objects: while the run lasts, hide the objects older than it from Python's
        garbage collector (``gc.freeze()``, undone when the run ends), so that its collections do
        not stop the searches for long (see docs/operator.md).
    """

    max_pages: int = 1
    site: str | None = None
    family_mode: FamilyMode | str | None = None
    max_concurrency: int = 16
    max_images: int | None = None
    downscale_oversized: bool = False
    batch_sources: int | None = None
    batch_seconds: float = 5.0
    progress_seconds: float = 10.0
    freeze_older_objects: bool = True

    def __post_init__(self) -> None:
        if self.max_pages < 1:
            raise ValueError(f"max_pages must be >= 1 (got {self.max_pages})")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 (got {self.max_concurrency})")
        if self.max_images is not None and self.max_images < 0:
            raise ValueError(f"max_images must be >= 0 (got {self.max_images})")
        FamilyMode.parse(self.family_mode)

    @property
    def commit_after(self) -> int:
        """Finished sources that trigger a commit."""
        wanted = self.batch_sources or max(1, self.max_concurrency // 2)
        return max(1, min(wanted, self.max_concurrency))

    @property
    def max_uncommitted(self) -> int:
        """Sources started but not yet committed, at most: what a crash makes a re-run pay again for.

        Searching, plus a batch being committed, plus the next one filling up meanwhile.
        """
        return self.max_concurrency + 2 * self.commit_after


@dataclass
class RunSummary:
    """What a run did; small enough for XCom."""

    listed: int = 0
    searched: int = 0
    skipped_done: int = 0
    failed: int = 0
    result_rows: int = 0
    requests: int = 0
    throttled_429: int = 0
    elapsed_seconds: float = 0.0
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        """Sources that this run searched or recorded as failed."""
        return self.searched + self.failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Enricher:
    """Runs the pipeline over sources into sinks with a hook.

    :param hook: the Search API hook (its connection's settings are read before the run).
    :param sinks: where rows go; a source is skipped when every sink already holds it.
    :param settings: how to search and commit.
    """

    def __init__(self, hook: SearchApiHook, sinks: list[Sink], settings: EnrichmentSettings | None = None) -> None:
        self.hook = hook
        self.sinks = sinks
        self.settings = settings or EnrichmentSettings()
        self.summary = RunSummary()
        self._pending = Batch()
        self._last_flush = time.monotonic()
        self._flush_lock: asyncio.Lock | None = None
        self._uncommitted = asyncio.Semaphore(1)
        self._finished = asyncio.Event()
        self._done_per_sink: list[set[str]] = []
        self._read_inline = True
        self._commit_inline = True

    # -- sync entry point ---------------------------------------------------------------------
    def run(self, sources: Iterable[SourceImage]) -> RunSummary:
        """Search every source not already done and commit the rows; return the summary.

        Failures of single images are recorded, not raised; a sink that cannot commit stops the run
        (what was committed stays, and a re-run resumes after it). Call :meth:`arun` instead from
        code that already runs an event loop.
        """
        return asyncio.run(self.arun(sources))

    async def arun(self, sources: Iterable[SourceImage]) -> RunSummary:
        """:meth:`run` for async callers. Blocking work (listing, reading, committing) runs in threads,
        but for reads of small local files and commits to memory or a local disk, which run on the
        event loop until one of them is slow."""
        started = time.monotonic()
        await self.hook.aget_config()  # read the connection (and fail on bad settings) before any work
        self._done_per_sink = [await asyncio.to_thread(sink.done_sources) for sink in self.sinks]
        done = _intersection(self._done_per_sink)
        if done:
            log.info("Resuming: %d sources already done in the output are skipped", len(done))
        try:
            with _collector_skips_older_objects(self.settings.freeze_older_objects):
                await self._run(sources, done)
        finally:
            transport = self.hook.transport
            self.summary.requests = transport.requests_sent
            self.summary.throttled_429 = transport.failures.get(429, 0)
            self.summary.elapsed_seconds = round(time.monotonic() - started, 3)
            self.summary.outputs = [sink.location() for sink in self.sinks]
        for sink in self.sinks:
            await asyncio.to_thread(sink.finish, self.summary.to_dict())
        return self.summary

    # -- async pipeline -----------------------------------------------------------------------
    async def _run(self, sources: Iterable[SourceImage], done: set[str]) -> None:
        settings = self.settings
        self._flush_lock = asyncio.Lock()
        self._uncommitted = asyncio.Semaphore(settings.max_uncommitted)
        self._finished = asyncio.Event()
        progress = Progress(self.summary, self.hook.transport, interval=settings.progress_seconds)
        feed = _Feed(sources, done, self.summary, settings.max_images, progress)
        stop = asyncio.Event()
        committer = asyncio.create_task(self._commit_loop(progress, stop))
        executor = ThreadPoolExecutor(
            max_workers=min(32, settings.max_concurrency), thread_name_prefix="searchapi-read"
        )
        # ``max_concurrency`` workers, each searching one source after another: a worker goes on to its
        # next source in the same turn of the event loop that finished the last, where a task per
        # source waited for two more turns (a freed slot wakes the starter; a new task starts).
        workers = [asyncio.create_task(self._work(feed, committer, executor)) for _ in range(settings.max_concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:  # only after a failure: nothing may run once the clients close
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            feed.close()
            stop.set()
            self._finished.set()
            outcome = (await asyncio.gather(committer, return_exceptions=True))[0]
            executor.shutdown(wait=False, cancel_futures=True)
            await self.hook.aclose()
        if isinstance(outcome, BaseException):
            raise outcome
        progress.log(final=True)

    async def _work(self, feed: _Feed, committer: asyncio.Task[None], executor: ThreadPoolExecutor) -> None:
        """Search sources from the feed until it runs dry."""
        while (source := await feed.next()) is not None:
            await self._acquire_slot(committer)
            self.summary.listed += 1
            await self._search(source, executor)

    async def _acquire_slot(self, committer: asyncio.Task[None]) -> None:
        """Wait until a source may start: room among the uncommitted (freed by commits; fail at once if
        the committer died, i.e. a sink failed)."""
        if committer.done():
            committer.result()  # raises the sink's error
            raise RuntimeError("the committer stopped before the run ended")
        if self._uncommitted.locked():  # wait for a commit, or for the committer to fail
            acquire = asyncio.ensure_future(self._uncommitted.acquire())
            await asyncio.wait({acquire, committer}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                acquire.cancel()
                committer.result()
                raise RuntimeError("the committer stopped before the run ended")
        else:  # the common case, without a helper task: it would cost loop turns per start
            await self._uncommitted.acquire()

    async def _commit_loop(self, progress: Progress, stop: asyncio.Event) -> None:
        """Commit finished sources when enough of them wait or the oldest waited long enough."""
        settings = self.settings
        while True:
            try:
                await asyncio.wait_for(self._finished.wait(), timeout=COMMIT_POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
            self._finished.clear()
            progress.maybe_log()
            waiting = self._pending.sources
            due = time.monotonic() - self._last_flush >= settings.batch_seconds
            if waiting and (waiting >= settings.commit_after or due or stop.is_set()):
                await self._flush()
            if stop.is_set() and not self._pending.sources:  # the last commit is done: end at once
                return

    async def _flush(self) -> None:
        assert self._flush_lock is not None
        async with self._flush_lock:
            batch, self._pending = self._pending, Batch()
            self._last_flush = time.monotonic()
            if not batch.sources:
                return
            for sink, already in zip(self.sinks, self._done_per_sink, strict=True):
                await self._commit(sink, batch.without(already) if already else batch)
            for _ in range(batch.sources):
                self._uncommitted.release()

    async def _commit(self, sink: Sink, batch: Batch) -> None:
        """Commit in a thread, or on the event loop when the sink commits locally (memory, a local
        disk) and commits there have stayed fast.

        Handing a local commit to a thread costs more CPU than the commit itself: the thread and the
        event loop wake each other and take turns at the GIL (measured with a commit every 8 images of
        1 MiB: 1.46 -> 1.12 context switches and 2.49 -> 2.36 ms of client CPU per image; see
        docs/benchmarks.md). The first slow commit (a network mount, a stalling disk) sends the rest of
        the run's commits to threads, so that the loop never stalls for long.
        """
        if not (self._commit_inline and getattr(sink, "commits_locally", False)):
            await asyncio.to_thread(sink.write, batch)
            return
        started = time.monotonic()
        sink.write(batch)  # a failure ends the run: the committer fails with it
        elapsed = time.monotonic() - started
        if elapsed > SLOW_LOCAL_COMMIT_SECONDS:
            self._commit_inline = False
            log.info("A commit took %.0f ms: commits go to threads from now on", elapsed * 1000)

    async def _search(self, source: SourceImage, executor: ThreadPoolExecutor) -> None:
        stage = STAGE_READ
        size = None
        try:
            query: dict[str, Any]
            if source.is_url:
                query = {"url": source.uri}
            else:
                data = await self._read_image(source, executor)
                size = len(data)
                stage = STAGE_VALIDATE
                query = {"image": self._validate(data, source)}
            stage = STAGE_API
            settings = self.settings
            pages = [
                page
                async for page in self.hook.aiter_pages(
                    **query, site=settings.site, family_mode=settings.family_mode, max_pages=settings.max_pages
                )
            ]
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - every failure is recorded against its source
            if isinstance(err, InvalidImageError):
                stage = STAGE_VALIDATE
            self._pending.errors.append(error_row(source, stage, err))
            self.summary.failed += 1
        else:
            rows = result_rows(source, pages, size)
            self._pending.results.extend(rows)
            self.summary.searched += 1
            self.summary.result_rows += len(rows)
        if not self._pending.sources:
            self._last_flush = time.monotonic()  # the batch's age counts from its first source
        self._pending.sources += 1
        if self._pending.sources >= self.settings.commit_after:
            self._finished.set()

    async def _read_image(self, source: SourceImage, executor: ThreadPoolExecutor) -> bytes:
        """Read in a thread, or on the event loop when the file is local, listed as small, and reads
        there have stayed fast.

        A thread hop per image costs more CPU than reading a small local file (measured: 0.5-0.8 ms
        against 0.1 ms), so those are read right here. The first slow read (a network or FUSE mount,
        a cold disk) sends the rest of the run to threads, so that the loop never stalls for long.
        """
        fs, _ = source.location
        if not (
            self._read_inline
            and isinstance(fs, LocalFileSystem)
            and source.size is not None
            and source.size <= INLINE_READ_MAX_BYTES
        ):
            return await asyncio.get_running_loop().run_in_executor(executor, self._read, source)
        started = time.monotonic()
        try:
            return self._read(source)
        finally:
            elapsed = time.monotonic() - started
            if elapsed > SLOW_LOCAL_READ_SECONDS:
                self._read_inline = False
                log.info("Reading %s took %.0f ms: local reads go to threads from now on", source.uri, elapsed * 1000)

    def _read(self, source: SourceImage) -> bytes:
        limit = MAX_READ_BYTES_FOR_DOWNSCALE if self.settings.downscale_oversized else MAX_IMAGE_BYTES
        if source.size is not None and source.size > limit:
            raise InvalidImageError(
                f"{source.uri}: {source.size:,} bytes is over the limit of {limit:,} bytes; not read"
            )
        # Through the filesystem itself: ObjectStoragePath.open would record every image read as an
        # input Asset for lineage (costly, and noise); the task's outlet is what it produces.
        fs, key = source.location
        if isinstance(fs, LocalFileSystem):
            data = _read_local(key, limit)
        else:
            with fs.open(key, "rb") as handle:
                data = handle.read(limit + 1)
        if len(data) > limit:
            raise InvalidImageError(f"{source.uri}: over the limit of {limit:,} bytes; not read")
        return data

    def _validate(self, data: bytes, source: SourceImage) -> bytes:
        if self.settings.downscale_oversized and len(data) > MAX_IMAGE_BYTES:
            data = downscale_to_limit(data, name=source.uri)
        check_image(data, name=source.uri)
        return data


def _read_local(path: str, limit: int) -> bytes:
    """A local file's bytes, at most ``limit + 1`` of them, read into a buffer of the file's size.

    Cheaper than ``fs.open(...).read(limit + 1)``: that allocates the whole limit up front (64 MiB
    with downscaling) and touches fresh pages for every image, and fsspec's file object wraps the
    plain one.
    """
    with open(path, "rb") as handle:  # buffered: read(n) reads on until n bytes or the end (FUSE, NFS)
        size = min(os.fstat(handle.fileno()).st_size, limit)
        data = handle.read(size + 1)
        if len(data) == size + 1 and size < limit:  # the file grew since: read on up to the limit
            data += handle.read(limit - size)
    return data


_freezes_lock = threading.Lock()
_runs_in_our_freeze = 0


@contextlib.contextmanager
def _collector_skips_older_objects(enabled: bool = True) -> Iterator[None]:
    """While the run lasts, the garbage collector leaves alone the objects that exist when it starts.

    A task's process holds hundreds of thousands of objects (Airflow, the DAG, the libraries) that
    outlive the run. A full collection walks them all, 0.2-0.3 s on a 2-core VM, and the event loop
    stops meanwhile: every search in flight waits. Frozen (``gc.freeze()``), they are skipped, and
    collections look only at what the run makes (measured: 432 -> 475 images/s, 64 in flight).

    The last run of the process to end unfreezes them (runs may overlap, in threads or in one loop).
    A process that froze objects itself before (one forked by an executor that freezes before
    forking) is left alone. Garbage that exists when a run starts is freed only after it ends.
    """
    global _runs_in_our_freeze
    with _freezes_lock:
        ours = enabled and (_runs_in_our_freeze > 0 or gc.get_freeze_count() == 0)
        if ours:
            gc.freeze()
            _runs_in_our_freeze += 1
    try:
        yield
    finally:
        if ours:
            with _freezes_lock:
                _runs_in_our_freeze -= 1
                if _runs_in_our_freeze == 0:
                    gc.unfreeze()


def _intersection(sets: list[set[str]]) -> set[str]:
    if not sets:
        return set()
    common = sets[0]
    for other in sets[1:]:
        common = common & other
    return common


class _Feed:
    """The sources a run searches, handed to its workers one at a time.

    The listing (which may block: a bucket's pages) is read in a thread, a chunk at a time, one chunk
    ahead of the one being handed out, so that workers rarely wait for it (they waited 0.7 % of their
    time on refills otherwise). Sources that every sink already holds are counted as skipped and not
    handed out, and none are once ``max_images`` were (nor is the listing read ahead past them).

    :param sources: the listing.
    :param done: URIs of sources already done.
    :param summary: the run's counters (``listed``, ``skipped_done``).
    :param max_images: sources to hand out at most (``None``: all).
    :param progress: told when the listing is complete.
    """

    def __init__(
        self,
        sources: Iterable[SourceImage],
        done: set[str],
        summary: RunSummary,
        max_images: int | None,
        progress: Progress,
    ) -> None:
        self._listing: Iterator[SourceImage] = iter(sources)
        self._done = done
        self._summary = summary
        self._left = max_images
        self._progress = progress
        self._chunk: collections.deque[SourceImage] = collections.deque()
        self._ended = False
        self._reading = asyncio.Lock()  # one worker takes the next chunk; the others wait for it
        self._ahead: asyncio.Task[list[SourceImage]] | None = None

    async def next(self) -> SourceImage | None:
        """The next source to search, or ``None`` when there is none left."""
        while True:
            while self._chunk:
                source = self._chunk.popleft()
                if source.uri in self._done:
                    self._summary.listed += 1
                    self._summary.skipped_done += 1
                    continue
                if self._left is not None:
                    if self._left <= 0:  # the rest of the listing is left unread
                        self._end()
                        return None
                    self._left -= 1
                return source
            if self._ended:
                return None
            if self._left == 0:  # max_images handed out at the end of a chunk: the listing is not read on
                self._end()
                return None
            async with self._reading:
                if not self._chunk and not self._ended:
                    reading, self._ahead = self._ahead or self._read_chunk(), None
                    try:
                        chunk = await reading
                    except BaseException:  # the run fails with it: no other worker reads the listing again
                        self._ended = True
                        raise
                    self._chunk.extend(chunk)
                    if not chunk:
                        self._end()
                    elif self._left is None or self._left > len(chunk):
                        self._ahead = self._read_chunk()

    def _read_chunk(self) -> asyncio.Task[list[SourceImage]]:
        return asyncio.ensure_future(asyncio.to_thread(lambda: list(itertools.islice(self._listing, _LISTING_CHUNK))))

    def _end(self) -> None:
        self._chunk.clear()
        self._ended = True
        self._progress.listing_done()
        self.close()

    def close(self) -> None:
        """Drop the chunk being read ahead (when the run ends before using it)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead.cancel() and not ahead.cancelled():
            ahead.exception()  # read already: its failure, if any, is dropped with it (not logged as unretrieved)
