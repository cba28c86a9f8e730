"""The SQL output on a real PostgreSQL 15 (tests/postgres_server.py): what the SQLite tests prove, and
the text PostgreSQL refuses where SQLite stores it."""

from __future__ import annotations

import os

import pytest
from airflow.providers.postgres.hooks.postgres import PostgresHook

from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, SqlSink, images_from_urls, list_images
from airflow_provider_searchapi.engine.records import STAGE_READ, error_row, result_rows
from airflow_provider_searchapi.engine.sinks import Batch
from airflow_provider_searchapi.engine.sources import SourceImage
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from tests.conftest import make_jpeg, sql_only_run, write_images


@pytest.fixture
def hook(searchapi_connection):
    return SearchApiHook(searchapi_connection, requests_per_second=1000)


def run(hook, sources, sinks):
    return Enricher(hook, sinks, EnrichmentSettings(max_concurrency=4)).run(sources)


def searches(emulator) -> int:
    return emulator.stats.snapshot()["search_requests"]


def test_tables_rows_and_types_and_a_rerun_that_searches_nothing(hook, tmp_path, searchapi_emulator, postgres_conn_id):
    write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "text.jpg").write_text("not an image")  # refused for good: an error row, done
    first = run(hook, list_images(f"file://{tmp_path}/in/"), [SqlSink(postgres_conn_id, "found")])
    assert (first.searched, first.failed) == (3, 1)

    db = PostgresHook(postgres_conn_id=postgres_conn_id)
    types = dict(
        db.get_records("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'found'")
    )
    assert (types["source_uri"], types["source_size"], types["rank"], types["searched_at"]) == (
        "text",
        "bigint",
        "integer",
        "text",
    )
    size, rank, width, page_title = db.get_first(
        "SELECT source_size, rank, width, page_title FROM found WHERE source_uri LIKE %s AND rank = 0",
        ["%img-0001.jpg"],
    )
    assert (size, rank) == ((tmp_path / "in" / "img-0001.jpg").stat().st_size, 0)
    assert isinstance(width, int) and isinstance(page_title, str)
    ((source, stage, retryable),) = db.get_records("SELECT source_uri, stage, retryable FROM found_errors")
    assert (source, stage, retryable) == (f"file://{tmp_path}/in/text.jpg", "validate", 0)

    before = searches(searchapi_emulator)
    again = run(hook, list_images(f"file://{tmp_path}/in/"), [SqlSink(postgres_conn_id, "found")])  # tables found
    assert (again.skipped_done, again.searched, searches(searchapi_emulator)) == (4, 0, before)
    assert db.get_first("SELECT COUNT(*) FROM found")[0] == 30  # 10 rows a source, none twice


def test_schema_qualified_tables_beside_a_same_named_one(hook, tmp_path, postgres_conn_id):
    db = PostgresHook(postgres_conn_id=postgres_conn_id)
    db.run("CREATE SCHEMA enrich")
    path = tmp_path / "a.jpg"
    path.write_bytes(make_jpeg(8))
    sinks = [SqlSink(postgres_conn_id, "enrich.found"), SqlSink(postgres_conn_id, "found")]
    assert run(hook, list_images(f"file://{path}"), sinks).searched == 1
    assert db.get_first("SELECT COUNT(*) FROM enrich.found")[0] == db.get_first("SELECT COUNT(*) FROM found")[0] == 10
    indexes = db.get_records("SELECT schemaname, indexname FROM pg_indexes WHERE indexname LIKE 'found%' ORDER BY 1")
    assert indexes == [("enrich", "found_source_uri_idx"), ("public", "found_source_uri_idx")]


def test_a_batch_is_one_transaction(postgres_conn_id):
    sink = SqlSink(postgres_conn_id, "found")
    db = PostgresHook(postgres_conn_id=postgres_conn_id)
    db.run("DROP TABLE found_errors")  # the errors' insert fails after the results'
    source = SourceImage("https://example.com/1.jpg")
    batch = Batch(results=result_rows(source, [], None), errors=[error_row(source, STAGE_READ, OSError("x"))])
    with pytest.raises(
        OSError, match=r"^sql_table 'found' \(sql_conn_id 'results_pg'\): cannot write there \(.*found_errors"
    ):
        sink.write(batch)
    assert db.get_first("SELECT COUNT(*) FROM found")[0] == 0


def test_the_operator_with_only_a_postgres_output_keeps_its_ledger_in_the_tables(
    tmp_path, searchapi_emulator, searchapi_connection, postgres_conn_id
):
    write_images(tmp_path / "in", 4)
    (tmp_path / "in" / "text.jpg").write_text("not an image")
    first = sql_only_run(tmp_path, postgres_conn_id)
    assert (first["searched"], first["failed"]) == (4, 1)
    assert first["outputs"] == [{"sql_conn_id": "results_pg", "table": "found", "errors_table": "found_errors"}]

    (tmp_path / "in" / "img-0002.jpg").write_bytes(make_jpeg(555))
    before = searches(searchapi_emulator)
    never = sql_only_run(tmp_path, postgres_conn_id, reprocess="never")
    assert (never["searched"], never["skipped_done"]) == (0, 5)
    changed = sql_only_run(tmp_path, postgres_conn_id)  # the refused text.jpg is not tried again
    assert (changed["searched"], changed["changed"], changed["skipped_done"], changed["failed"]) == (1, 1, 4, 0)
    assert searches(searchapi_emulator) - before == 1
    assert sql_only_run(tmp_path, postgres_conn_id)["searched"] == 0
    db = PostgresHook(postgres_conn_id=postgres_conn_id)
    sizes = db.get_records("SELECT DISTINCT source_size FROM found WHERE source_uri LIKE '%img-0002.jpg'")
    assert len(sizes) == 2  # both versions' rows


def test_a_name_that_is_not_utf8_is_stored_percent_encoded(hook, tmp_path, searchapi_emulator, postgres_conn_id):
    folder = tmp_path / "in"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as handle:
        handle.write(make_jpeg(1))
    (folder / "broken\udcff.jpg").write_bytes(b"not an image")  # an error row naming it
    summary = run(hook, list_images(f"file://{folder}/"), [SqlSink(postgres_conn_id, "found")])
    assert (summary.searched, summary.failed) == (1, 1)
    db = PostgresHook(postgres_conn_id=postgres_conn_id)
    assert db.get_first("SELECT DISTINCT source_uri FROM found")[0] == f"file://{folder}/caf%E9.jpg"
    uri, message = db.get_first("SELECT source_uri, message FROM found_errors")
    assert uri == f"file://{folder}/broken%FF.jpg"
    again = run(hook, list_images(f"file://{folder}/"), [SqlSink(postgres_conn_id, "found")])
    assert again.skipped_done == 2 and again.requests == 0


def test_a_uri_longer_than_a_btree_key_is_stored_and_found_done(hook, tmp_path, postgres_conn_id):
    """PostgreSQL's B-tree index refuses keys over 2,704 bytes; a local path can be 4,096."""
    folder = tmp_path.joinpath(*(os.urandom(120).hex() for _ in range(14)))  # 3,400 characters
    write_images(folder, 1)
    source = f"file://{folder}/"
    assert run(hook, list_images(source), [SqlSink(postgres_conn_id, "found")]).searched == 1
    again = run(hook, list_images(source), [SqlSink(postgres_conn_id, "found")])
    assert (again.skipped_done, again.requests) == (1, 0)
    db = PostgresHook(postgres_conn_id=postgres_conn_id)
    assert db.get_first("SELECT COUNT(*) FROM found WHERE source_uri = %s", [f"{source}img-0000.jpg"])[0] == 10


def test_nul_characters_are_stored_as_replacement_characters_and_long_text_whole(hook, postgres_conn_id):
    """PostgreSQL's text holds no NUL character (SQLite's does); a server's answer or a URL may carry one."""
    sink = SqlSink(postgres_conn_id, "found")
    source = SourceImage("https://example.com/a\x00b.jpg")
    results = result_rows(source, [], None)
    results[0]["page_title"] = "title\x00with a NUL"
    results[0]["passage"] = "long text " * 100_000  # a megabyte: TEXT holds it
    errors = [error_row(source, STAGE_READ, ValueError("bad byte \x00 here"))]
    sink.write(Batch(results=results, errors=errors, sources=1))
    db = PostgresHook(postgres_conn_id=postgres_conn_id)
    uri = "https://example.com/a\ufffdb.jpg"
    assert db.get_first("SELECT source_uri, page_title FROM found") == (uri, "title\ufffdwith a NUL")
    assert db.get_first("SELECT LENGTH(passage) FROM found")[0] == 1_000_000
    assert db.get_first("SELECT source_uri, message FROM found_errors") == (uri, "bad byte \ufffd here")


def test_a_url_with_a_nul_character_is_stored_as_sent_and_found_done(hook, searchapi_emulator, postgres_conn_id):
    urls = ["https://example.com/a\x00b.jpg"]
    assert run(hook, images_from_urls(urls), [SqlSink(postgres_conn_id, "found")]).searched == 1
    again = run(hook, images_from_urls(urls), [SqlSink(postgres_conn_id, "found")])
    assert (again.skipped_done, again.requests) == (1, 0)
    db = PostgresHook(postgres_conn_id=postgres_conn_id)
    assert db.get_records("SELECT DISTINCT source_uri FROM found") == [("https://example.com/a%00b.jpg",)]
