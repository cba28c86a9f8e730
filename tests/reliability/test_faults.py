"""Transient faults are retried to 100 % results; permanent ones are reported once per image."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_searchapi.engine import (
    Enricher,
    EnrichmentSettings,
    JsonLinesSink,
    SqlSink,
    XComSink,
    list_images,
)
from airflow_provider_searchapi.engine.records import SETUP_FAILURES_TO_STOP
from airflow_provider_searchapi.exceptions import SearchApiSetupError
from tests.conftest import make_jpeg, write_images

IMAGES = 2000
TRANSIENT = ["429", "429-no-retry-after", "500", "503", "504", "stall", "drop"]


@pytest.mark.serial  # measures time
def test_2000_images_through_20_percent_transient_faults(
    make_hook, searchapi_emulator, bucket, s3_conn_id, sqlite_conn_id, tmp_path
):
    for i in range(IMAGES):  # a local folder: the faults under test are the API's, not the store's
        write_images(tmp_path / "images" / str(i // 500), 1, start=i)
    searchapi_emulator.settings.update({"fault_rate": 0.2, "fault_kinds": TRANSIENT, "stall_seconds": 1.0})
    hook = make_hook("authorized_key", requests_per_second=1000, timeout=0.6)  # the stalls last 1 s
    out = ObjectStoragePath(f"{bucket}/results/", conn_id=s3_conn_id)

    summary = Enricher(
        hook, [JsonLinesSink(out), SqlSink(sqlite_conn_id, "found")], EnrichmentSettings(max_concurrency=32)
    ).run(list_images(f"file://{tmp_path}/images/**/*.jpg"))

    stats = searchapi_emulator.stats.snapshot()
    injected = sum(stats["faults"].values())
    assert (summary.listed, summary.searched, summary.failed) == (IMAGES, IMAGES, 0)
    assert 0.15 * IMAGES < injected < 0.25 * IMAGES
    assert set(stats["faults"]) == set(TRANSIENT)
    # Each injected fault costs one more attempt. On a loaded machine a few more attempts may fail on
    # their own (no connection, or no answer, within the timeout): each is counted as a failure
    # without an answer, and retried once. Retries stay bounded, and nothing else is sent twice.
    extra = summary.requests - (IMAGES + injected)
    assert 0 <= extra <= 5
    assert IMAGES + injected <= stats["search_requests"] <= summary.requests
    assert hook.stats.failures[0] == stats["faults"]["drop"] + stats["faults"]["stall"] + extra
    assert stats["queries_answered"] == IMAGES and stats["queries_answered_more_than_once"] <= extra
    rows = [json.loads(line) for part in (out / "results").iterdir() for line in part.read_text().splitlines()]
    assert len({row["source_uri"] for row in rows}) == IMAGES
    assert len(rows) == len({(row["source_uri"], row["rank"]) for row in rows})
    import sqlite3

    with sqlite3.connect(tmp_path / "results.db") as db:
        total, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT source_uri || '#' || rank) FROM found").fetchone()
    assert total == distinct == len(rows)


def test_a_403_is_not_retried_is_reported_once_per_image_and_stops_the_run(make_hook, searchapi_emulator, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i}.jpg").write_bytes(make_jpeg(i))
    hook = make_hook("api_key", requests_per_second=1000, folder_id="b1gnotyours")
    sink = XComSink()
    enricher = Enricher(hook, [sink], EnrichmentSettings(max_concurrency=1))
    with pytest.raises(SearchApiSetupError):  # a wrong folder is the setup's fault: the run stops early
        enricher.run(list_images(f"file://{folder}/"))
    assert (enricher.summary.searched, enricher.summary.failed) == (0, SETUP_FAILURES_TO_STOP)
    assert searchapi_emulator.stats.snapshot()["search_requests"] == SETUP_FAILURES_TO_STOP  # none retried
    assert len({row["source_uri"] for row in sink.errors}) == len(sink.errors) == SETUP_FAILURES_TO_STOP
    assert {(row["stage"], row["http_status"], row["retryable"]) for row in sink.errors} == {("api", 403, 1)}
    assert all("Permission denied" in row["message"] and row["request_id"] for row in sink.errors)


def test_a_400_is_not_retried(make_hook, searchapi_emulator, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.jpg").write_bytes(make_jpeg(i)[:-20])  # cut in the pixel data: only the service finds out
    sink = XComSink()
    Enricher(make_hook("api_key", requests_per_second=1000), [sink]).run(list_images(f"file://{folder}/"))
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 5
    assert [(row["http_status"], row["retryable"]) for row in sink.errors] == [(400, 0)] * 5
