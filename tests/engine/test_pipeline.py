"""The enrichment pipeline over real storage, the emulator and SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import io
import json
import os
import sqlite3
import threading
import time

import pytest
from PIL import Image

from airflow_provider_searchapi.engine import (
    Enricher,
    EnrichmentSettings,
    JsonLinesSink,
    SqlSink,
    XComSink,
    images_from_urls,
    list_images,
    pipeline,
)
from airflow_provider_searchapi.engine.records import ERROR_COLUMNS, RESULT_COLUMNS
from airflow_provider_searchapi.engine.sinks import Batch
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from tests.conftest import make_jpeg, write_images


@pytest.fixture
def hook(searchapi_connection):
    return SearchApiHook(searchapi_connection, requests_per_second=1000)


def run(hook, source, sinks, **settings):
    return Enricher(hook, sinks, EnrichmentSettings(**settings)).run(
        list_images(source) if isinstance(source, str) else source
    )


def test_rows_follow_the_schema_and_rank_across_pages(hook, tmp_path, searchapi_emulator):
    write_images(tmp_path / "in", 5)
    sink = XComSink()
    summary = run(hook, f"file://{tmp_path}/in/", [sink], max_pages=3)
    assert (summary.listed, summary.searched, summary.failed) == (5, 5, 0)
    assert all(tuple(row) == RESULT_COLUMNS for row in sink.results)
    by_source: dict[str, list[dict]] = {}
    for row in sink.results:
        by_source.setdefault(row["source_uri"], []).append(row)
    assert len(by_source) == 5
    for rows in by_source.values():
        assert [r["rank"] for r in rows] == list(range(len(rows)))
        assert len({r["cbir_id"] for r in rows}) == 1
        assert rows[0]["source_size"] > 0 and rows[0]["source_mtime"]
        pages = sorted({r["page"] for r in rows})
        assert pages == list(range(len(pages))) and len(pages) <= 3
    assert summary.result_rows == len(sink.results)
    assert summary.requests == searchapi_emulator.stats.snapshot()["search_requests"]


def test_a_source_with_no_hits_still_has_one_row(hook, tmp_path, searchapi_emulator):
    searchapi_emulator.settings.no_results_rate = 1.0
    write_images(tmp_path / "in", 3)
    sink = XComSink()
    run(hook, f"file://{tmp_path}/in/", [sink], max_pages=2)
    assert len(sink.results) == 3
    assert all(row["url"] is None and row["rank"] is None and row["cbir_id"] for row in sink.results)


def test_mixed_bad_input_lands_as_named_errors(hook, tmp_path, searchapi_emulator):
    folder = tmp_path / "in"
    write_images(folder, 3)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(make_jpeg(99)[:-20])  # header whole: only the API can tell
    (folder / "huge.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(4 * 1024 * 1024))
    (folder / "text.jpg").write_text("this is not an image")
    sink = XComSink()
    summary = run(hook, f"file://{folder}/", [sink])
    assert (summary.listed, summary.searched, summary.failed) == (7, 3, 4)
    errors = {row["source_uri"].rsplit("/", 1)[1]: row for row in sink.errors}
    assert all(tuple(row) == ERROR_COLUMNS for row in sink.errors)
    assert errors["empty.jpg"]["stage"] == "validate" and "empty" in errors["empty.jpg"]["message"]
    assert errors["huge.jpg"]["stage"] == "validate" and "over the limit" in errors["huge.jpg"]["message"]
    assert errors["text.jpg"]["stage"] == "validate" and "not a JPEG" in errors["text.jpg"]["message"]
    assert errors["truncated.jpg"]["stage"] == "api" and errors["truncated.jpg"]["http_status"] == 400
    assert all(row["retryable"] == 0 for row in sink.errors)  # the images themselves are refused
    assert {row["source_uri"] for row in sink.results}.isdisjoint(row["source_uri"] for row in sink.errors)
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 4  # 3 good + the truncated one


def test_oversized_images_are_downscaled_when_asked(hook, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    noise = Image.frombytes("RGB", (1200, 1200), os.urandom(1200 * 1200 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    assert buffer.tell() > 3 * 1024 * 1024
    (folder / "big.png").write_bytes(buffer.getvalue())
    refused, shrunk = XComSink(), XComSink()
    assert run(hook, f"file://{folder}/", [refused]).failed == 1
    assert run(hook, f"file://{folder}/", [shrunk], downscale_oversized=True).searched == 1
    assert shrunk.results[0]["source_size"] == buffer.tell()


def test_concurrency_is_bounded(hook, tmp_path, searchapi_emulator):
    searchapi_emulator.settings.latency = 0.05
    write_images(tmp_path / "in", 40)
    summary = run(hook, f"file://{tmp_path}/in/", [XComSink()], max_concurrency=6)
    assert summary.searched == 40
    assert 2 <= searchapi_emulator.stats.snapshot()["max_in_flight"] <= 6


class SlowSink(XComSink):
    """Takes its time to commit, and notes how many sources were started but not committed then."""

    commits_locally = False  # like a remote store: its commits run in threads

    def __init__(self, enricher_summary, seconds: float) -> None:
        super().__init__()
        self.summary = enricher_summary
        self.seconds = seconds
        self.committed = 0
        self.uncommitted_seen: list[int] = []

    def write(self, batch: Batch) -> None:
        time.sleep(self.seconds)
        self.uncommitted_seen.append(self.summary.listed - self.committed)
        super().write(batch)
        self.committed += batch.sources


def test_slow_commits_do_not_idle_searches_and_uncommitted_work_is_bounded(hook, tmp_path, searchapi_emulator):
    searchapi_emulator.settings.latency = 0.05
    write_images(tmp_path / "in", 60)
    settings = EnrichmentSettings(max_concurrency=4, batch_sources=2)
    enricher = Enricher(hook, [], settings)
    sink = SlowSink(enricher.summary, seconds=0.3)
    enricher.sinks = [sink]
    summary = enricher.run(list_images(f"file://{tmp_path}/in/"))
    assert summary.searched == 60 and len({row["source_uri"] for row in sink.results}) == 60
    # While a commit takes 0.3 s, all 4 search slots keep working (searches take 0.05 s) ...
    assert searchapi_emulator.stats.snapshot()["max_in_flight"] == 4
    # ... until 4 searching + 2 committing + 2 waiting for the next commit are uncommitted: that
    # much a crash could lose.
    assert settings.max_uncommitted == 8
    assert max(sink.uncommitted_seen) == 8


class _CollectorWatchingSink(XComSink):
    """Notes, at each commit, how many objects the garbage collector has been told to skip."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen_seen: list[int] = []

    def write(self, batch: Batch) -> None:
        self.frozen_seen.append(gc.get_freeze_count())
        super().write(batch)


def test_a_run_hides_older_objects_from_the_collector_and_leaves_it_as_found(hook, tmp_path):
    if gc.get_freeze_count():
        pytest.skip("this test process has frozen objects already")
    write_images(tmp_path / "in", 6)
    sink = _CollectorWatchingSink()
    assert run(hook, f"file://{tmp_path}/in/", [sink], batch_sources=2).searched == 6
    assert sink.frozen_seen and min(sink.frozen_seen) > 10_000  # Airflow's and the session's objects
    assert gc.get_freeze_count() == 0

    sink = _CollectorWatchingSink()  # turned off
    run(hook, f"file://{tmp_path}/in/", [sink], batch_sources=2, freeze_older_objects=False)
    assert sink.frozen_seen and max(sink.frozen_seen) == 0

    gc.freeze()  # as a process forked by an executor that froze its objects: left alone
    try:
        before = gc.get_freeze_count()
        sink = _CollectorWatchingSink()
        run(hook, f"file://{tmp_path}/in/", [sink], batch_sources=2)
        assert sink.frozen_seen and max(sink.frozen_seen) <= before
        assert 0 < gc.get_freeze_count() <= before
    finally:
        gc.unfreeze()


def test_overlapping_runs_keep_older_objects_frozen_until_the_last_ends(
    hook, searchapi_connection, tmp_path, searchapi_emulator
):
    if gc.get_freeze_count():
        pytest.skip("this test process has frozen objects already")
    searchapi_emulator.settings.latency = 0.05
    write_images(tmp_path / "short", 2)
    write_images(tmp_path / "long", 12)
    short_sink, long_sink = _CollectorWatchingSink(), _CollectorWatchingSink()
    short = Enricher(hook, [short_sink], EnrichmentSettings(batch_sources=1))
    other_hook = SearchApiHook(searchapi_connection, requests_per_second=1000)
    long = Enricher(other_hook, [long_sink], EnrichmentSettings(max_concurrency=2, batch_sources=2))

    async def both() -> None:
        await asyncio.gather(
            short.arun(list_images(f"file://{tmp_path}/short/")), long.arun(list_images(f"file://{tmp_path}/long/"))
        )

    asyncio.run(both())
    assert short.summary.searched == 2 and long.summary.searched == 12
    assert len(long_sink.frozen_seen) == 6  # committing long after the short run ended
    assert min(short_sink.frozen_seen + long_sink.frozen_seen) > 10_000
    assert gc.get_freeze_count() == 0


def _reads_by_thread(monkeypatch, slow_first: bool = False) -> list[str]:
    """Record the thread of every image read; with ``slow_first``, the first read takes 30 ms."""
    from airflow_provider_searchapi.engine import pipeline

    threads: list[str] = []
    original = pipeline.Enricher._read

    def read(self, source):
        threads.append(threading.current_thread().name)
        if slow_first and len(threads) == 1:
            time.sleep(0.03)
        return original(self, source)

    monkeypatch.setattr(pipeline.Enricher, "_read", read)
    return threads


def test_small_local_files_are_read_on_the_loop_until_a_read_is_slow(hook, tmp_path, monkeypatch):
    write_images(tmp_path / "in", 12)
    threads = _reads_by_thread(monkeypatch)
    assert run(hook, f"file://{tmp_path}/in/", [XComSink()], max_concurrency=4).searched == 12
    assert set(threads) == {"MainThread"}

    threads = _reads_by_thread(monkeypatch, slow_first=True)
    assert run(hook, f"file://{tmp_path}/in/", [XComSink()], max_concurrency=4).searched == 12
    assert threads[0] == "MainThread" and all(name.startswith("searchapi-read") for name in threads[1:])


def test_large_files_or_files_of_unknown_size_are_read_in_threads(hook, tmp_path, monkeypatch):
    from airflow_provider_searchapi.engine import images_from_paths, pipeline

    write_images(tmp_path / "in", 6)
    monkeypatch.setattr(pipeline, "INLINE_READ_MAX_BYTES", 10)  # every image is "large"
    large = _reads_by_thread(monkeypatch)
    assert run(hook, f"file://{tmp_path}/in/", [XComSink()]).searched == 6
    monkeypatch.undo()
    paths = [f"file://{path}" for path in sorted((tmp_path / "in").iterdir())]
    unsized = [dataclasses.replace(source, size=None) for source in images_from_paths(paths)]
    unknown = _reads_by_thread(monkeypatch)
    assert run(hook, unsized, [XComSink()]).searched == 6
    threads = large + unknown
    assert len(threads) == 12 and all(name.startswith("searchapi-read") for name in threads)


def test_small_local_files_of_a_shard_are_read_on_the_loop_like_listed_ones(hook, tmp_path, monkeypatch):
    from airflow_provider_searchapi.engine import images_from_paths, pipeline

    monkeypatch.setattr(pipeline, "SLOW_LOCAL_READ_SECONDS", 60.0)  # a loaded machine's slow read is not at stake
    write_images(tmp_path / "in", 6)
    paths = [f"file://{path}" for path in sorted((tmp_path / "in").iterdir())]
    threads = _reads_by_thread(monkeypatch)
    assert run(hook, images_from_paths(paths), [XComSink()]).searched == 6
    assert threads == ["MainThread"] * 6


def _commits_by_thread(monkeypatch, *sink_classes, slow_first: bool = False) -> list[tuple[str, str]]:
    """Record (sink class, thread) of every commit; with ``slow_first``, the first commit takes 30 ms."""
    commits: list[tuple[str, str]] = []
    for cls in sink_classes:

        def write(self, batch, _original=cls.write, _name=cls.__name__):
            commits.append((_name, threading.current_thread().name))
            if slow_first and len(commits) == 1:
                time.sleep(0.03)
            return _original(self, batch)

        monkeypatch.setattr(cls, "write", write)
    return commits


def test_local_commits_run_on_the_loop_and_database_commits_in_threads(hook, tmp_path, monkeypatch, sqlite_conn_id):
    from airflow.sdk import ObjectStoragePath

    monkeypatch.setattr(pipeline, "SLOW_LOCAL_COMMIT_SECONDS", 60.0)  # a loaded machine's slow commit is not at stake
    write_images(tmp_path / "in", 12)
    commits = _commits_by_thread(monkeypatch, JsonLinesSink, SqlSink, XComSink)
    sinks = [JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/")), SqlSink(sqlite_conn_id, "found")]
    # max_concurrency=2: a commit per image, 4 images uncommitted at most, so 3 commits at least of 12
    assert run(hook, f"file://{tmp_path}/in/", sinks, max_concurrency=2).searched == 12
    assert run(hook, f"file://{tmp_path}/in/", [XComSink()], max_concurrency=2).searched == 12
    threads = {
        name: [thread for sink, thread in commits if sink == name] for name in ("JsonLinesSink", "XComSink", "SqlSink")
    }
    assert len(threads["JsonLinesSink"]) >= 3 and set(threads["JsonLinesSink"]) == {"MainThread"}
    assert len(threads["XComSink"]) >= 3 and set(threads["XComSink"]) == {"MainThread"}
    assert len(threads["SqlSink"]) >= 3 and "MainThread" not in threads["SqlSink"]
    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("SELECT COUNT(DISTINCT source_uri) FROM found").fetchone()[0] == 12


def test_local_commits_go_to_threads_once_one_is_slow(hook, tmp_path, monkeypatch):
    from airflow.sdk import ObjectStoragePath

    write_images(tmp_path / "in", 12)
    commits = _commits_by_thread(monkeypatch, JsonLinesSink, slow_first=True)
    sink = JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/"))
    assert run(hook, f"file://{tmp_path}/in/", [sink], max_concurrency=2).searched == 12
    threads = [thread for _, thread in commits]
    assert len(threads) >= 3 and threads[0] == "MainThread" and "MainThread" not in threads[1:]
    assert len(sink.done_sources()) == 12


class _PlainSink:
    """A sink of one's own with the protocol's methods only (no ``commits_locally``)."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.sources: set[str] = set()

    def done_sources(self) -> set[str]:
        return set()

    def write(self, batch: Batch) -> None:
        self.threads.append(threading.current_thread().name)
        self.sources.update(row["source_uri"] for row in batch.results)

    def finish(self, summary) -> None:
        pass

    def location(self) -> dict:
        return {}


def test_a_sink_that_does_not_say_it_commits_locally_commits_in_threads(hook, tmp_path):
    write_images(tmp_path / "in", 6)
    sink = _PlainSink()
    assert run(hook, f"file://{tmp_path}/in/", [sink], max_concurrency=2).searched == 6
    assert len(sink.sources) == 6 and len(sink.threads) >= 2 and "MainThread" not in sink.threads


def test_max_images_and_urls(hook, searchapi_emulator):
    sink = XComSink()
    urls = [f"https://example.com/{i}.jpg" for i in range(10)]
    summary = run(hook, images_from_urls(urls), [sink], max_images=4)
    assert (summary.listed, summary.searched) == (4, 4)
    assert searchapi_emulator.stats.snapshot()["uploads"] == 0  # URLs are sent, not downloaded


def test_the_listing_is_read_a_chunk_at_a_time_and_not_past_max_images(hook, searchapi_emulator):
    pulled = []

    def listing():
        for n in range(100_000):
            pulled.append(n)
            yield from images_from_urls([f"https://example.com/{n}.jpg"])

    sink = XComSink()
    summary = run(hook, listing(), [sink], max_images=300, max_concurrency=8)
    assert (summary.listed, summary.searched, summary.failed) == (300, 300, 0)
    assert {row["source_uri"] for row in sink.results} == {f"https://example.com/{n}.jpg" for n in range(300)}
    assert 300 < len(pulled) <= 2 * 256  # two chunks read, nothing after the 300th used


def test_a_listing_that_fails_fails_the_run_when_its_chunk_is_needed(hook, searchapi_emulator):
    def listing():
        yield from images_from_urls([f"https://example.com/{n}.jpg" for n in range(300)])
        raise OSError("the bucket went away")

    sink = XComSink()
    with pytest.raises(OSError, match="the bucket went away"):
        run(hook, listing(), [sink], max_concurrency=8)
    committed = {row["source_uri"] for row in sink.results}
    assert committed <= {f"https://example.com/{n}.jpg" for n in range(256)}  # the first chunk...
    assert len(committed) >= 256 - 8  # ...searched and committed, but for those cancelled in flight


def test_every_source_of_a_long_listing_is_searched_once_by_few_workers(hook, searchapi_emulator):
    urls = [f"https://example.com/{n}.jpg" for n in range(700)]
    sink = XComSink()
    summary = run(hook, images_from_urls(urls), [sink], max_concurrency=3)
    assert (summary.listed, summary.searched, summary.failed) == (700, 700, 0)
    assert {row["source_uri"] for row in sink.results} == set(urls)
    assert len({(row["source_uri"], row["rank"]) for row in sink.results}) == len(sink.results) == summary.result_rows
    assert searchapi_emulator.stats.snapshot()["max_in_flight"] <= 3


def test_the_run_ends_with_its_last_commit_not_at_the_committers_next_look(hook, monkeypatch):
    monkeypatch.setattr(pipeline, "COMMIT_POLL_SECONDS", 30.0)
    started = time.monotonic()
    summary = run(hook, images_from_urls(["https://example.com/a.jpg"]), [XComSink()], batch_seconds=60)
    assert summary.searched == 1
    assert time.monotonic() - started < 10  # it waited one more look (30 s) after the last commit before


def test_resume_skips_what_is_committed(hook, tmp_path, searchapi_emulator, sqlite_conn_id):
    write_images(tmp_path / "in", 12)
    (tmp_path / "in" / "text.jpg").write_text("nope")
    out = f"file://{tmp_path}/out/"

    def sinks():
        from airflow.sdk import ObjectStoragePath

        return [JsonLinesSink(ObjectStoragePath(out)), SqlSink(sqlite_conn_id, "found")]

    first = run(hook, f"file://{tmp_path}/in/", sinks(), max_concurrency=4)
    calls = searchapi_emulator.stats.snapshot()["search_requests"]
    write_images(tmp_path / "in", 3, start=100)  # new images arrive
    second = run(hook, f"file://{tmp_path}/in/", sinks(), max_concurrency=4)
    assert (first.searched, first.failed) == (12, 1)
    assert (second.skipped_done, second.searched, second.failed) == (13, 3, 0)
    assert searchapi_emulator.stats.snapshot()["search_requests"] - calls == 3
    with sqlite3.connect(tmp_path / "results.db") as db:
        sources, distinct_rows = db.execute(
            "SELECT COUNT(DISTINCT source_uri), COUNT(DISTINCT source_uri || '#' || COALESCE(rank, -1)) FROM found"
        ).fetchone()
        total = db.execute("SELECT COUNT(*) FROM found").fetchone()[0]
    assert sources == 15 and distinct_rows == total  # no duplicate rows
    jsonl = [
        json.loads(line)
        for part in (tmp_path / "out" / "results").glob("*.jsonl")
        for line in part.read_text().splitlines()
    ]
    assert len(jsonl) == total
    assert len(list((tmp_path / "out" / "_manifest").glob("*.json"))) == 2


class _FailingSink(JsonLinesSink):
    """Fails on the n-th commit, like a store that goes away mid-run."""

    def __init__(self, prefix, fail_on: int) -> None:
        super().__init__(prefix)
        self.writes = 0
        self.fail_on = fail_on

    def write(self, batch: Batch) -> None:
        self.writes += 1
        if self.writes == self.fail_on:
            super().write(Batch(errors=batch.errors, sources=batch.sources))  # errors land, then…
            raise OSError("storage went away")
        super().write(batch)


def test_a_storage_failure_stops_the_run_and_a_rerun_completes_without_duplicates(hook, tmp_path):
    from airflow.sdk import ObjectStoragePath

    write_images(tmp_path / "in", 30)
    prefix = ObjectStoragePath(f"file://{tmp_path}/out/")
    with pytest.raises(OSError, match="storage went away"):
        run(hook, f"file://{tmp_path}/in/", [_FailingSink(prefix, fail_on=3)], max_concurrency=4, batch_sources=2)
    committed = JsonLinesSink(prefix).done_sources()
    assert 0 < len(committed) < 30
    assert not [p for p in (tmp_path / "out" / "results").iterdir() if not p.name.endswith(".jsonl")]
    summary = run(hook, f"file://{tmp_path}/in/", [JsonLinesSink(prefix)], max_concurrency=4)
    assert summary.skipped_done == len(committed) and summary.searched == 30 - len(committed)
    rows = [
        json.loads(line)
        for part in (tmp_path / "out" / "results").glob("*.jsonl")
        for line in part.read_text().splitlines()
    ]
    keys = [(row["source_uri"], row["rank"]) for row in rows]
    assert len(keys) == len(set(keys)) and len({row["source_uri"] for row in rows}) == 30


def test_s3_to_s3_and_sqlite(hook, bucket, s3_conn_id, sqlite_conn_id, tmp_path):
    from airflow.sdk import ObjectStoragePath

    root = ObjectStoragePath(f"{bucket}/images/", conn_id=s3_conn_id)
    for seed in range(6):
        (root / f"d{seed % 2}" / f"{seed}.jpg").write_bytes(make_jpeg(seed))
    out = ObjectStoragePath(f"{bucket}/results/", conn_id=s3_conn_id)
    summary = run(
        hook,
        list_images(f"{bucket}/images/**/*.jpg", conn_id=s3_conn_id),
        [JsonLinesSink(out), SqlSink(sqlite_conn_id, "found")],
    )
    assert summary.searched == 6
    parts = [p for p in (out / "results").iterdir()]
    rows = [json.loads(line) for p in parts for line in p.read_text().splitlines()]
    assert {row["source_uri"] for row in rows} == {f"{bucket}/images/d{s % 2}/{s}.jpg" for s in range(6)}
    assert all(row["source_etag"] for row in rows)
    assert not (out / "_tmp").exists()  # every part was moved into place (S3 has no empty folders)
    assert not JsonLinesSink(out).commits_locally  # S3's commits run in threads, not on the event loop


def test_sql_sink_refuses_bad_names_and_non_sql_connections(sqlite_conn_id, monkeypatch):
    with pytest.raises(ValueError, match="sql_table"):
        SqlSink(sqlite_conn_id, "found; DROP TABLE x")
    monkeypatch.setenv("AIRFLOW_CONN_NOT_SQL", '{"conn_type": "yandex_searchapi", "extra": {"folder_id": "f"}}')
    with pytest.raises(ValueError, match="not a DbApiHook"):
        SqlSink("not_sql", "found")


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_pages"):
        EnrichmentSettings(max_pages=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        EnrichmentSettings(max_concurrency=0)
    with pytest.raises(ValueError, match="family_mode"):
        EnrichmentSettings(family_mode="sometimes")
    assert EnrichmentSettings(max_concurrency=16).commit_after == 8
    assert EnrichmentSettings(max_concurrency=4, batch_sources=100).commit_after == 4


def test_local_reads_take_a_buffer_of_the_file_size_not_of_the_limit(tmp_path):
    import tracemalloc

    from airflow_provider_searchapi.engine.pipeline import MAX_READ_BYTES_FOR_DOWNSCALE, _read_local

    small, exact, over = tmp_path / "small.jpg", tmp_path / "exact.jpg", tmp_path / "over.jpg"
    small.write_bytes(b"s" * 1000)
    exact.write_bytes(b"e" * 4096)
    over.write_bytes(b"o" * 5000)
    assert _read_local(str(exact), 4096) == b"e" * 4096  # at the limit: whole, not flagged
    assert _read_local(str(over), 4096) == b"o" * 4097  # over: one byte more than the limit says so
    tracemalloc.start()
    try:
        assert _read_local(str(small), MAX_READ_BYTES_FOR_DOWNSCALE) == b"s" * 1000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # read(limit + 1) would have allocated 64 MiB for a 1 KB file


class _FailingListing:
    """URL sources, then one failure; counts what is asked of it after failing."""

    def __init__(self, count: int) -> None:
        self._sources = images_from_urls([f"https://example.com/{n}.jpg" for n in range(count)])
        self.failed = False
        self.asked_after_failing = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.failed:
            self.asked_after_failing += 1
            raise StopIteration
        try:
            return next(self._sources)
        except StopIteration:
            self.failed = True
            raise OSError("the bucket went away") from None


def test_after_a_listing_failure_no_worker_reads_the_listing_again():
    listing = _FailingListing(40)
    feed = pipeline._Feed(listing, set(), pipeline.RunSummary(), None, _NoProgress())

    async def two_workers() -> list:
        return await asyncio.gather(feed.next(), feed.next(), return_exceptions=True)

    first, second = asyncio.run(two_workers())
    assert isinstance(first, OSError) and second is None
    assert listing.failed and listing.asked_after_failing == 0


def test_a_listing_failure_fails_the_run(hook, searchapi_emulator):
    with pytest.raises(OSError, match="the bucket went away"):
        run(hook, _FailingListing(40), [XComSink()], max_concurrency=16)


def test_max_images_reached_at_a_chunks_end_reads_no_further():
    pulled = []

    def listing():
        for n in range(10_000):
            pulled.append(n)
            yield from images_from_urls([f"https://example.com/{n}.jpg"])

    feed = pipeline._Feed(listing(), set(), pipeline.RunSummary(), 256, _NoProgress())

    async def take_all() -> list:
        taken = []
        while (source := await feed.next()) is not None:
            taken.append(source)
        return taken

    assert len(asyncio.run(take_all())) == 256
    assert len(pulled) == 256


class _NoProgress:
    def listing_done(self) -> None:
        pass
