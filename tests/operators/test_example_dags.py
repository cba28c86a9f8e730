"""The example DAGs run end to end with `airflow dags test`, offline, as the README promises."""

from __future__ import annotations

import json
import sqlite3

import pytest
from airflow.sdk import ObjectStoragePath

from tests.airflow_env import connections_env, dags_test
from tests.conftest import make_jpeg


@pytest.fixture
def env(airflow_env, searchapi_connection, s3_conn_id, tmp_path):
    """The Airflow environment plus the connections: emulator, moto S3 and a SQLite results file."""
    connections = connections_env()
    connections["AIRFLOW_CONN_SEARCHAPI_RESULTS_DB"] = json.dumps(
        {"conn_type": "sqlite", "host": str(tmp_path / "results.db")}
    )
    return {**airflow_env, **connections}


def test_enrich_bucket_from_s3_to_s3_and_sqlite(env, bucket, s3_conn_id, tmp_path):
    images = ObjectStoragePath(f"{bucket}/images/", conn_id=s3_conn_id)
    for seed in range(5):
        (images / f"cam{seed % 2}" / f"{seed}.jpg").write_bytes(make_jpeg(seed))
    conf = {
        "source": f"{bucket}/images/**/*.jpg",
        "source_conn_id": s3_conn_id,
        "output_path": f"{bucket}/results/",
        "output_conn_id": s3_conn_id,
    }
    dags_test(env, "searchapi_enrich_bucket", conf)
    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("SELECT COUNT(DISTINCT source_uri) FROM image_search_results").fetchone()[0] == 5
    day, state = sorted(ObjectStoragePath(f"{bucket}/results/", conn_id=s3_conn_id).iterdir(), key=str)
    assert state.name == "_state"  # the ledger, beside the daily partitions
    rows = [json.loads(line) for part in (day / "results").iterdir() for line in part.read_text().splitlines()]
    assert {row["source_uri"] for row in rows} == {f"{bucket}/images/cam{s % 2}/{s}.jpg" for s in range(5)}


def test_enrich_bucket_daily_the_second_day_searches_nothing_done(env, tmp_path, searchapi_emulator):
    conf = {"output_path": f"file://{tmp_path}/results/"}
    dags_test(env, "searchapi_enrich_bucket", conf, logical_date="2026-12-01")
    first = searchapi_emulator.stats.snapshot()["search_requests"]
    second = dags_test(env, "searchapi_enrich_bucket", conf, logical_date="2026-12-02")
    assert searchapi_emulator.stats.snapshot()["search_requests"] == first > 0
    assert "Searched 0 images" in second.stdout + second.stderr
    assert "8 skipped as already done" in second.stdout + second.stderr  # every bundled sample image
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["2026-12-01", "2026-12-02", "_state"]


def test_sharded_example_maps_over_shards(env, redis_server, tmp_path):
    out = tmp_path / "sharded"
    env = {**env, "AIRFLOW_CONN_SEARCHAPI_REDIS": redis_server.connection_json()}  # the shards' shared limit
    result = dags_test(env, "searchapi_enrich_sharded", {"output_path": f"file://{out}/"})
    rows = [json.loads(line) for part in (out / "results").glob("*.jsonl") for line in part.read_text().splitlines()]
    assert len({row["source_uri"] for row in rows}) == 8  # every bundled sample image, once
    assert len(list((out / "_manifest").glob("*.json"))) == 4  # one run per shard
    assert "enrich_shard" in result.stdout + result.stderr


def test_custom_task_example(env, searchapi_emulator):
    dags_test(env, "searchapi_custom_task")
    stats = searchapi_emulator.stats.snapshot()
    # The engine task uploads the 4 bundled JPEGs; the hook task uploads one image once and asks
    # for its second page by CBIR id.
    assert stats["uploads"] == 4 + 1
    assert stats["search_requests"] == 4 + 2
