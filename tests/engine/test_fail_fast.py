"""A run whose setup is wrong stops within a few requests and says why; image-level refusals never stop it."""

from __future__ import annotations

import secrets

import pytest

from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, XComSink, images_from_urls
from airflow_provider_searchapi.exceptions import SearchApiAuthError, SearchApiSetupError
from airflow_provider_searchapi.retry import RetryPolicy

URLS = [f"https://example.com/{n}.jpg" for n in range(300)]


def test_a_wrong_folder_stops_the_run_within_20_requests(make_hook, searchapi_emulator):
    hook = make_hook("api_key", folder_id="b1gwrongfolder", requests_per_second=1000)
    sink = XComSink()
    enricher = Enricher(hook, [sink], EnrichmentSettings(max_concurrency=16))
    with pytest.raises(SearchApiSetupError) as info:
        enricher.run(images_from_urls(URLS))
    message = str(info.value)
    assert "403" in message and "Permission denied to folder 'b1gwrongfolder'" in message
    assert "folder b1gwrongfolder" in message and searchapi_emulator.url in message
    assert info.value.cause.status == 403
    requests = searchapi_emulator.stats.snapshot()["search_requests"]
    assert 5 <= requests <= 20
    # what finished is committed: one error row per image that was answered
    assert len(sink.errors) >= 5 and all(row["http_status"] == 403 for row in sink.errors)
    assert enricher.summary.failure_causes == {
        "Search API 403: Permission denied to folder 'b1gwrongfolder'.": enricher.summary.failed
    }


def test_an_unreachable_iam_endpoint_stops_the_run_naming_it(make_hook, searchapi_emulator):
    fast = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02)
    hook = make_hook("authorized_key", iam_endpoint="http://127.0.0.1:9/iam/v1/tokens", retry_policy=fast)
    with pytest.raises(SearchApiSetupError) as info:
        Enricher(hook, [XComSink()], EnrichmentSettings(max_concurrency=4)).run(images_from_urls(URLS))
    assert isinstance(info.value.cause, SearchApiAuthError)
    assert "could not reach the IAM endpoint http://127.0.0.1:9/iam/v1/tokens" in str(info.value)
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_image_refusals_never_stop_a_run_and_failures_group_by_cause(make_hook, searchapi_emulator, tmp_path):
    from tests.conftest import make_jpeg

    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(8):
        (folder / f"{n}.jpg").write_bytes(make_jpeg(n)[:-20])  # the service cannot decode them: 400 each
    (folder / "empty.jpg").write_bytes(b"")
    from airflow_provider_searchapi.engine import list_images

    hook = make_hook("api_key", requests_per_second=1000)
    summary = Enricher(hook, [XComSink()]).run(list_images(f"file://{folder}/"))
    assert summary.failed == 9 and summary.searched == 0
    assert summary.failure_causes["invalid image: the file is empty (0 bytes)"] == 1
    assert [n for cause, n in summary.failure_causes.items() if cause.startswith("Search API 400")] == [8]
    assert "8 × Search API 400" in summary.top_causes()


# -- an output or state folder that cannot be written: refused before the first search -------------
def _run_into(hook, tmp_path, sinks, ledger=None):
    from airflow_provider_searchapi.engine import list_images
    from tests.conftest import write_images

    write_images(tmp_path / "in", 40)
    return Enricher(hook, sinks, EnrichmentSettings(max_concurrency=4), ledger).run(
        list_images(f"file://{tmp_path}/in/")
    )


@pytest.mark.parametrize("store", ["below a file", "missing bucket"])
def test_an_output_that_cannot_be_written_fails_before_any_search(
    store, make_hook, searchapi_emulator, tmp_path, request
):
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import JsonLinesSink

    if store == "below a file":  # a folder cannot be made there, whoever runs the test (root too)
        (tmp_path / "a-file").write_text("x")
        url, conn_id, reason = f"file://{tmp_path}/a-file/out/", None, "Not a directory"
    else:
        url, conn_id = f"s3://no-such-{secrets.token_hex(4)}/out/", request.getfixturevalue("s3_conn_id")
        reason = "bucket does not exist"
    sink = JsonLinesSink(ObjectStoragePath(url, conn_id=conn_id))
    with pytest.raises(OSError, match=rf"^output_path '{url}': cannot write there \(.*{reason}"):
        _run_into(make_hook("api_key"), tmp_path, [sink])
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_a_state_folder_that_cannot_be_written_fails_before_any_search(
    make_hook, searchapi_emulator, tmp_path, s3_conn_id
):
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import JsonLinesSink, Ledger

    state = f"s3://no-such-{secrets.token_hex(4)}/_state/"
    ledger = Ledger(ObjectStoragePath(state, conn_id=s3_conn_id))
    sink = JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/"))
    with pytest.raises(OSError, match=rf"^state_path '{state}': cannot write there \(.*bucket does not exist"):
        _run_into(make_hook("api_key"), tmp_path, [sink], ledger)
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_a_sql_table_that_refuses_inserts_fails_the_first_commit_naming_it(
    make_hook, searchapi_emulator, tmp_path, sqlite_conn_id
):
    import sqlite3

    from airflow_provider_searchapi.engine import SqlSink

    sink = SqlSink(sqlite_conn_id, "found")
    with sqlite3.connect(tmp_path / "results.db") as db:  # as a database refuses a user without INSERT rights
        db.execute("CREATE TRIGGER deny BEFORE INSERT ON found BEGIN SELECT RAISE(ABORT, 'permission denied'); END")
    with pytest.raises(
        OSError, match=r"^sql_table 'found' \(sql_conn_id 'results_db'\): cannot write there \(.*permission denied"
    ):
        _run_into(make_hook("api_key", requests_per_second=1000), tmp_path, [sink])
    settings = EnrichmentSettings(max_concurrency=4)  # as _run_into runs
    assert searchapi_emulator.stats.snapshot()["search_requests"] <= settings.max_uncommitted


def test_the_write_checks_leave_nothing_behind(make_hook, tmp_path, sqlite_conn_id):
    import sqlite3

    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import JsonLinesSink, Ledger, SqlSink

    out, state = ObjectStoragePath(f"file://{tmp_path}/out/"), ObjectStoragePath(f"file://{tmp_path}/state/")
    hook = make_hook("api_key", requests_per_second=1000)
    assert (
        _run_into(hook, tmp_path, [JsonLinesSink(out), SqlSink(sqlite_conn_id, "found")], Ledger(state)).searched == 40
    )
    assert not list((tmp_path / "out" / "_tmp").iterdir()) and not list((tmp_path / "state" / "_tmp").iterdir())
    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("SELECT COUNT(DISTINCT source_uri) FROM found").fetchone()[0] == 40
        assert db.execute("SELECT COUNT(*) FROM found_errors").fetchone()[0] == 0


def test_a_table_of_ones_own_that_requires_every_column_a_run_fills_takes_its_rows(make_hook, tmp_path, sqlite_conn_id):
    import sqlite3

    from airflow_provider_searchapi.engine import SqlSink

    with sqlite3.connect(tmp_path / "results.db") as db:  # made by the user, stricter than the provider's own
        db.execute(
            "CREATE TABLE found (source_uri TEXT NOT NULL, source_size BIGINT, source_etag TEXT, source_mtime TEXT,"
            " cbir_id TEXT, page INTEGER, rank INTEGER, url TEXT, format TEXT, width INTEGER, height INTEGER,"
            " passage TEXT, host TEXT, page_title TEXT, page_url TEXT, searched_at TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TABLE found_errors (source_uri TEXT NOT NULL, stage TEXT NOT NULL, error_class TEXT NOT NULL,"
            " http_status INTEGER, message TEXT NOT NULL, request_id TEXT, retryable INTEGER NOT NULL,"
            " failed_at TEXT NOT NULL)"
        )
    sink = SqlSink(sqlite_conn_id, "found", create_table=False)
    hook = make_hook("api_key", requests_per_second=1000)
    assert _run_into(hook, tmp_path, [sink]).searched == 40


def test_a_batch_is_one_transaction_on_a_connection_that_autocommits(tmp_path, sqlite_conn_id, monkeypatch):
    """Sessions that commit each statement unless told not to (Snowflake's) would keep half a batch."""
    import sqlite3

    from airflow_provider_searchapi.engine.records import STAGE_READ, error_row, result_rows
    from airflow_provider_searchapi.engine.sinks import Batch, SqlSink
    from airflow_provider_searchapi.engine.sources import SourceImage

    class AutocommitConnection:
        """sqlite3 with PEP 249's ``autocommit`` attribute, on by default."""

        def __init__(self) -> None:
            self.db = sqlite3.connect(tmp_path / "results.db", isolation_level=None)

        @property
        def autocommit(self) -> bool:
            return self.db.isolation_level is None

        @autocommit.setter
        def autocommit(self, on: bool) -> None:
            self.db.isolation_level = None if on else "DEFERRED"

        def __getattr__(self, name):
            return getattr(self.db, name)

    sink = SqlSink(sqlite_conn_id, "found")
    monkeypatch.setattr(sink.hook, "supports_autocommit", True, raising=False)
    monkeypatch.setattr(sink.hook, "get_conn", AutocommitConnection)
    with sqlite3.connect(tmp_path / "results.db") as db:  # the errors' insert fails after the results'
        db.execute("DROP TABLE found_errors")
    source = SourceImage("https://example.com/1.jpg")
    batch = Batch(results=result_rows(source, [], None), errors=[error_row(source, STAGE_READ, OSError("x"))])
    with pytest.raises(
        OSError, match=r"^sql_table 'found' \(sql_conn_id 'results_db'\): cannot write there \(.*no such table"
    ):
        sink.write(batch)
    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("SELECT COUNT(*) FROM found").fetchone()[0] == 0


def test_a_bucket_that_lets_write_but_not_delete_passes_the_check(make_hook, tmp_path, bucket, s3_conn_id, monkeypatch):
    """A write-only policy (no s3:DeleteObject) lets a run commit its parts (the leftover of each move
    stays under ``_tmp/``: s3fs's bulk delete does not raise), so the check must not ask for more."""
    import s3fs
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import JsonLinesSink

    call = s3fs.S3FileSystem._call_s3

    async def deny_deletes(self, method, *args, **kwargs):  # as S3 answers a caller without s3:DeleteObject
        if method == "delete_object":
            raise PermissionError("Access Denied")
        if method == "delete_objects":
            return {"Errors": [{"Key": item["Key"], "Code": "AccessDenied"} for item in kwargs["Delete"]["Objects"]]}
        return await call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", deny_deletes)
    sink = JsonLinesSink(ObjectStoragePath(f"{bucket}/out/", conn_id=s3_conn_id))
    assert _run_into(make_hook("api_key", requests_per_second=1000), tmp_path, [sink]).searched == 40
