"""SearchByImageOperator: arguments, XCom output, error ratio, outlets."""

from __future__ import annotations

import pytest

from airflow_provider_searchapi.operators.search_by_image import (
    MAX_XCOM_IMAGES,
    SearchByImageError,
    SearchByImageOperator,
)
from tests.conftest import write_images


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"output": "xcom"}, "exactly one of source"),
        ({"source": "file:///x/", "image_urls": ["https://x/y.jpg"], "output": "xcom"}, "exactly one of source"),
        ({"source": "file:///x/"}, "say where results go"),
        ({"source": "file:///x/", "output": "csv"}, "output must be 'xcom'"),
        ({"source": "file:///x/", "output": "xcom", "output_path": "file:///o/"}, "cannot be combined"),
        ({"source": "file:///x/", "sql_conn_id": "db"}, "go together"),
        ({"source": "file:///x/", "output": "xcom", "max_error_ratio": 1.5}, "max_error_ratio"),
    ],
)
def test_bad_arguments_are_refused_at_parse_time(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SearchByImageOperator(task_id="t", **kwargs)


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"max_concurrency": 0}, "max_concurrency must be greater than or equal to 1 (got 0)"),
        ({"commit_every": -1}, "commit_every must be greater than or equal to 1 (got -1)"),
        (
            {"max_pages": 0, "max_images": -1},
            "max_pages must be greater than or equal to 1 (got 0); "
            "max_images must be greater than or equal to 0 (got -1)",
        ),
        ({"reprocess": "sometimes"}, "reprocess must be one of changed, never, all, failed (got 'sometimes')"),
        (
            {"max_images": "x" * 10_000},
            "max_images must be a valid integer, unable to parse string as an integer "
            "(got 'xxxxxxxxxxxx...xxxxxxxxxxxxx')",
        ),
    ],
)
def test_bad_settings_are_refused_at_parse_time_in_one_line_naming_the_argument_and_value(settings, problem):
    with pytest.raises(ValueError) as info:
        SearchByImageOperator(task_id="t", source="file:///x/", output="xcom", **settings)
    assert str(info.value) == f"SearchByImageOperator: {problem}"


def test_a_huge_bad_value_is_not_echoed_whole():
    with pytest.raises(ValueError, match="^SearchByImageOperator: family_mode must be one of") as info:
        SearchByImageOperator(task_id="t", source="file:///x/", output="xcom", family_mode="x" * 10_000)
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)


def test_templated_settings_are_checked_once_rendered():
    op = SearchByImageOperator(task_id="t", source="file:///x/", output="xcom", max_pages="{{ params.pages }}")
    assert op.settings.max_pages == 1 and op.max_pages == "{{ params.pages }}"
    op.max_pages = "zero"  # as rendered from a bad param: refused at execute, in one line naming it
    with pytest.raises(ValueError, match=r"^SearchByImageOperator: max_pages must be a valid integer.*\(got 'zero'\)$"):
        op.execute({})


def test_output_path_is_declared_as_an_asset():
    op = SearchByImageOperator(task_id="t", source="s3://b/in/", output_path="s3://b/results/{{ ds }}/")
    (asset,) = op.outlets
    assert asset.uri == "s3://b/results"


def test_a_hive_style_partition_keeps_the_asset_and_the_ledger_in_the_folder_above_it():
    """``date={{ ds }}``: the static part ends inside the partition's name, which is no folder of its own."""
    op = SearchByImageOperator(task_id="t", source="s3://b/in/", output_path="s3://b/results/date={{ ds }}/")
    assert [asset.uri for asset in op.outlets] == ["s3://b/results"]
    assert op.state_path == "s3://b/results/_state/"


def test_xcom_output_returns_records_and_summary(tmp_path, searchapi_connection):
    write_images(tmp_path / "in", 3)
    result = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/*.jpg", output="xcom", max_pages=2
    ).execute({})
    assert result["searched"] == 3 and result["failed"] == 0
    assert {row["source_uri"] for row in result["records"]} == {
        f"file://{tmp_path}/in/img-{i:04d}.jpg" for i in range(3)
    }
    assert result["errors"] == []
    assert result["outputs"] == [{"xcom": "return value: records, errors"}]


def test_xcom_output_refuses_big_sources_before_any_call(tmp_path, searchapi_connection, searchapi_emulator):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(MAX_XCOM_IMAGES + 1):
        (folder / f"{i}.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ValueError, match="at most 500 images"):
        SearchByImageOperator(task_id="t", source=f"file://{folder}/", output="xcom").execute({})
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_error_ratio_fails_the_task_after_committing(tmp_path, searchapi_connection, sqlite_conn_id):
    write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.jpg").write_text("nope")
    op = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", sql_conn_id=sqlite_conn_id, sql_table="found", max_error_ratio=0.1
    )
    with pytest.raises(
        SearchByImageError, match=r"1 of 4 images failed \(25.0% > max_error_ratio 10.0%\).*found_errors"
    ):
        op.execute({})
    import sqlite3

    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("SELECT COUNT(DISTINCT source_uri) FROM found").fetchone()[0] == 3
        assert db.execute("SELECT stage FROM found_errors").fetchall() == [("validate",)]
    tolerant = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", sql_conn_id=sqlite_conn_id, sql_table="found", max_error_ratio=0.5
    )
    assert tolerant.execute({})["skipped_done"] == 4  # the refused image counts as done too


def test_public_urls(searchapi_connection, searchapi_emulator):
    urls = [f"https://example.com/{i}.jpg" for i in range(4)]
    result = SearchByImageOperator(task_id="t", image_urls=urls, output="xcom").execute({})
    assert {row["source_uri"] for row in result["records"]} == set(urls)
    assert searchapi_emulator.stats.snapshot()["uploads"] == 0


def test_requests_per_second_overrides_the_connection(searchapi_connection):
    op = SearchByImageOperator(task_id="t", image_urls=["https://x/y.jpg"], output="xcom", requests_per_second=2.5)
    assert op.hook.config.requests_per_second == 2.5


def test_commit_every_sets_the_batch(tmp_path, searchapi_connection):
    write_images(tmp_path / "in", 6)
    op = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", output_path=f"file://{tmp_path}/out/", commit_every=2
    )
    assert op.execute({})["searched"] == 6
    assert len(list((tmp_path / "out" / "results").glob("*.jsonl"))) >= 3


@pytest.mark.parametrize("urls", ["https://example.com/1.jpg", "{{ params.urls }}"])
def test_image_urls_as_a_string_are_refused_before_any_search(urls, searchapi_connection, searchapi_emulator):
    """A string is not a list of URLs (searched as such, each of its characters would be paid for):
    refused when the DAG is parsed, or once a template rendered one."""
    problem = r"^SearchByImageOperator: image_urls must be a list of URLs, not a string \('https://example.com/1.jpg'\)"
    if "{{" not in urls:
        with pytest.raises(ValueError, match=problem):
            SearchByImageOperator(task_id="t", image_urls=urls, output="xcom")
        return
    op = SearchByImageOperator(task_id="t", image_urls=urls, output="xcom")
    op.image_urls = "https://example.com/1.jpg"  # a template renders a string, unless the DAG renders native objects
    with pytest.raises(ValueError, match=problem):
        op.execute({})
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


@pytest.mark.parametrize(
    "parameter",
    ["searchapi_conn_id", "source_conn_id", "output_conn_id", "state_conn_id", "sql_conn_id", "rate_limit_conn_id"],
)
def test_a_connection_id_that_names_no_connection_is_refused_naming_the_parameter(
    parameter, tmp_path, searchapi_connection, searchapi_emulator
):
    """Storage would otherwise fall back on whatever credentials the worker has (another account's
    bucket, or a local path that ignores the connection): a typo must not go unnoticed."""
    write_images(tmp_path / "in", 3)
    kwargs = {"source": f"file://{tmp_path}/in/", "output_path": f"file://{tmp_path}/out/", parameter: "typo_conn"}
    if parameter == "sql_conn_id":
        kwargs["sql_table"] = "found"
    with pytest.raises(ValueError, match=rf"^{parameter} 'typo_conn': no Airflow connection has this id$"):
        SearchByImageOperator(task_id="t", **kwargs).execute({})
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


@pytest.mark.parametrize("rendered", [{"output_path": ""}, {"sql_conn_id": "", "sql_table": ""}])
def test_outputs_rendered_empty_are_refused_before_any_search(
    rendered, tmp_path, searchapi_connection, searchapi_emulator
):
    """A template that renders an output to nothing (a param left empty) would search every image and
    keep nothing."""
    write_images(tmp_path / "in", 3)
    templates = {name: "{{ params.out }}" for name in rendered}
    op = SearchByImageOperator(task_id="t", source=f"file://{tmp_path}/in/", **templates)
    for name, value in rendered.items():
        setattr(op, name, value)
    with pytest.raises(ValueError, match=rf"^{next(iter(rendered))} rendered empty: the results would go nowhere"):
        op.execute({})
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


@pytest.mark.parametrize("value, problem", [(0, "must be greater than 0"), ("ten", "must be a valid number")])
def test_a_bad_requests_per_second_is_refused_naming_it(value, problem, searchapi_connection, searchapi_emulator):
    op = SearchByImageOperator(task_id="t", image_urls=["https://x/y.jpg"], output="xcom", requests_per_second=value)
    with pytest.raises(ValueError, match=rf"^requests_per_second {problem}.* \(got {value!r}\)$"):
        op.execute({})
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_refusals_over_the_error_ratio_fail_without_a_retry(tmp_path, searchapi_connection, sqlite_conn_id):
    """A retry would skip the refused images as done and succeed: Airflow must not retry such a failure."""
    from airflow.providers.common.compat.sdk import AirflowFailException

    write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.jpg").write_text("nope")  # refused for good (retryable = 0)
    op = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", sql_conn_id=sqlite_conn_id, sql_table="found", max_error_ratio=0.1
    )
    with pytest.raises(AirflowFailException, match=r"1 of 4 images failed.*refused for good.*retry"):
        op.execute({})
    assert op.execute({})["skipped_done"] == 4  # what a retry would do: hence no retry


def test_retryable_failures_over_the_error_ratio_leave_the_retry_to_airflow(
    tmp_path, searchapi_connection, sqlite_conn_id, searchapi_emulator
):
    from airflow.providers.common.compat.sdk import AirflowFailException

    write_images(tmp_path / "in", 2)
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["503"], "fault_attempts": 1000})
    op = SearchByImageOperator(
        task_id="t",
        source=f"file://{tmp_path}/in/",
        sql_conn_id=sqlite_conn_id,
        sql_table="found",
        max_seconds_per_image=0.5,
    )
    with pytest.raises(SearchByImageError) as failure:
        op.execute({})
    assert not isinstance(failure.value, AirflowFailException)


def test_execution_timeout_commits_what_finished(tmp_path, monkeypatch, searchapi_connection, sqlite_conn_id):
    """Airflow's ``execution_timeout`` raises inside the running task (SIGALRM): the images searched by then
    are paid for, so they are committed (and the re-run skips them) before the task fails."""
    import sqlite3
    import threading

    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    from airflow_provider_searchapi.engine import list_images, pipeline

    write_images(tmp_path / "in", 4)
    listing_ends = threading.Event()

    def slow_listing():  # four images, then a listing that takes longer than the task may
        yield from list_images(f"file://{tmp_path}/in/")
        listing_ends.wait(5)

    op = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", sql_conn_id=sqlite_conn_id, sql_table="found", commit_every=8
    )
    monkeypatch.setattr(op, "_sources", slow_listing)
    monkeypatch.setattr(pipeline, "LISTING_CHUNK", 4)  # the four are searched while the listing goes on
    with pytest.raises(AirflowTaskTimeout), timeout(1.5):
        try:
            op.execute({})
        finally:
            listing_ends.set()
    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("SELECT COUNT(DISTINCT source_uri) FROM found").fetchone()[0] == 4
    rerun = SearchByImageOperator(
        task_id="t", source=f"file://{tmp_path}/in/", sql_conn_id=sqlite_conn_id, sql_table="found"
    ).execute({})
    assert (rerun["skipped_done"], rerun["searched"]) == (4, 0)  # the re-run pays for none of them again


def test_xcom_output_takes_a_big_source_when_max_images_bounds_the_run(tmp_path, searchapi_connection):
    """``max_images`` keeps the return value small however big the source: a trial run on a big bucket."""
    write_images(tmp_path / "in", MAX_XCOM_IMAGES + 1)
    result = SearchByImageOperator(task_id="t", source=f"file://{tmp_path}/in/", output="xcom", max_images=2).execute(
        {}
    )
    assert (result["searched"], result["failed"]) == (2, 0)
    assert len({row["source_uri"] for row in result["records"]}) == 2
