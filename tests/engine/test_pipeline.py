"""The enrichment pipeline over real storage, the emulator and SQLite."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time

import pytest
from airflow.sdk import ObjectStoragePath
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
from airflow_provider_searchapi.engine.sources import read_image
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


def test_slow_storage_does_not_cap_the_reads_in_flight(hook, tmp_path, monkeypatch):
    # asyncio.to_thread's pool has min(32, cores + 4) threads; the run reads with one thread per worker.
    workers = min(32, (os.cpu_count() or 1) + 4) + 4
    write_images(tmp_path / "in", workers)
    reading, peak, lock, all_reading = 0, 0, threading.Lock(), threading.Event()

    def slow_read(*args, **kwargs):
        nonlocal reading, peak
        with lock:
            reading += 1
            peak = max(peak, reading)
            if reading == workers:
                all_reading.set()
        # A slow store: each read lasts until every worker reads at once (10 s at most, if they cannot),
        # so that a busy machine starting the workers late does not change the count.
        all_reading.wait(timeout=10)
        with lock:
            reading -= 1
        return read_image(*args, **kwargs)

    monkeypatch.setattr(pipeline, "read_image", slow_read)
    assert run(hook, f"file://{tmp_path}/in/", [XComSink()], max_concurrency=workers).searched == workers
    assert peak == workers


class SlowSink(XComSink):
    """Takes its time to commit, and notes how many sources were started but not committed then."""

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


@pytest.mark.serial  # measures time
def test_slow_commits_do_not_idle_searches_and_uncommitted_work_is_bounded(hook, tmp_path, searchapi_emulator):
    searchapi_emulator.settings.latency = 0.05
    write_images(tmp_path / "in", 24)
    settings = EnrichmentSettings(max_concurrency=4, commit_every=2)
    enricher = Enricher(hook, [], settings)
    sink = SlowSink(enricher.summary, seconds=0.3)
    enricher.sinks = [sink]
    summary = enricher.run(list_images(f"file://{tmp_path}/in/"))
    assert summary.searched == 24 and len({row["source_uri"] for row in sink.results}) == 24
    # While a commit takes 0.3 s, all 4 search slots keep working (searches take 0.05 s) ...
    assert searchapi_emulator.stats.snapshot()["max_in_flight"] == 4
    # ... until 4 searching + 2 committing + 2 waiting for the next commit are uncommitted: that
    # much a crash could lose.
    assert settings.max_uncommitted == 8
    assert max(sink.uncommitted_seen) == 8


class _PlainSink:
    """A sink of one's own with the protocol's methods only; notes the thread of each commit."""

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


def test_commits_run_in_threads_off_the_event_loop(hook, tmp_path):
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
    assert len(pulled) == 300  # read a chunk at a time, and nothing after the 300th


def test_a_listing_that_fails_fails_the_run_after_what_it_listed_is_committed(hook, searchapi_emulator):
    def listing():
        yield from images_from_urls([f"https://example.com/{n}.jpg" for n in range(300)])
        raise OSError("the bucket went away")

    sink = XComSink()
    with pytest.raises(OSError, match="the bucket went away"):
        run(hook, listing(), [sink], max_concurrency=8)
    committed = {row["source_uri"] for row in sink.results}
    assert committed == {f"https://example.com/{n}.jpg" for n in range(300)}  # nothing listed is lost


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
    summary = run(hook, images_from_urls(["https://example.com/a.jpg"]), [XComSink()], commit_seconds=60)
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


def test_runs_started_in_the_same_second_draw_distinct_run_ids(tmp_path, monkeypatch):
    # Mapped shards writing one output start together: two drawing one run id would replace each
    # other's parts and manifest. 20,000 in one second: with 24 random bits, ~12 pairs would collide.
    monkeypatch.setattr(time, "strftime", lambda _format: "20261207T120000")
    prefix = ObjectStoragePath(f"file://{tmp_path}/out/")
    assert len({JsonLinesSink(prefix).run_id for _ in range(20_000)}) == 20_000


def test_an_output_that_already_holds_a_source_is_not_given_it_again(hook, tmp_path, sqlite_conn_id):
    """A run killed between two outputs' commits: the next one searches for the output that lacks the rows."""
    from airflow.sdk import ObjectStoragePath

    write_images(tmp_path / "in", 3)
    jsonl = JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/"))
    assert run(hook, f"file://{tmp_path}/in/", [jsonl]).searched == 3  # only the JSON Lines output has them
    both = [JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/")), SqlSink(sqlite_conn_id, "found")]
    assert run(hook, f"file://{tmp_path}/in/", both).searched == 3
    with sqlite3.connect(tmp_path / "results.db") as db:
        in_sql = db.execute("SELECT COUNT(*) FROM found").fetchone()[0]
    in_jsonl = sum(len(part.read_text().splitlines()) for part in (tmp_path / "out" / "results").glob("*.jsonl"))
    assert in_sql == in_jsonl == 30  # 10 rows a source in each output, none twice


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
        run(hook, f"file://{tmp_path}/in/", [_FailingSink(prefix, fail_on=3)], max_concurrency=4, commit_every=2)
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
    with pytest.raises(ValueError, match="commit_every"):
        EnrichmentSettings(commit_every=0)
    assert EnrichmentSettings(max_concurrency=16).batch_size == 8
    assert EnrichmentSettings(max_concurrency=4, commit_every=100).batch_size == 4


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


def test_a_listing_failure_fails_the_run(hook, searchapi_emulator):
    with pytest.raises(OSError, match="the bucket went away"):
        run(hook, _FailingListing(40), [XComSink()], max_concurrency=16)


def test_a_timeout_raised_inside_a_search_commits_the_searches_that_finished(hook, tmp_path, monkeypatch):
    """Airflow's ``execution_timeout`` (SIGALRM) may raise inside a worker's code rather than in the event
    loop: the sources searched by then are paid for, so they are committed before the run fails."""
    import asyncio

    from airflow.sdk.exceptions import AirflowTaskTimeout

    write_images(tmp_path / "in", 5)
    started, finished = [], []
    real = hook.aiter_pages

    async def timing_out(**query):  # the fifth search is where the alarm goes off, once the others ended
        if len(started) == 4:
            while len(finished) < 4:
                await asyncio.sleep(0.01)
            raise AirflowTaskTimeout("Timeout, PID: 1")
        started.append(query)
        async for page in real(**query):
            yield page
        finished.append(query)

    monkeypatch.setattr(hook, "aiter_pages", timing_out)
    sink = XComSink()
    with pytest.raises(AirflowTaskTimeout):  # the four wait in a batch of five, uncommitted, when it goes off
        run(hook, f"file://{tmp_path}/in/", [sink], max_concurrency=5, commit_every=5)
    assert len({row["source_uri"] for row in sink.results}) == 4
