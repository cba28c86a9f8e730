"""Each image has one name whatever way it is reached (a link, a bare path, a doubled slash, a shard, a
name that is not UTF-8), so that a re-run pays for nothing done; folder markers and link loops list no image."""

from __future__ import annotations

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_searchapi.engine import list_images
from airflow_provider_searchapi.engine.listing import shard_images
from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from tests.conftest import make_jpeg, write_images


def searches(emulator) -> int:
    return emulator.stats.snapshot()["search_requests"]


def _run(**kwargs) -> dict:
    return SearchByImageOperator(task_id="t", max_error_ratio=1.0, **kwargs).execute({})


@pytest.mark.parametrize(
    "target, follow_symlinks",
    [
        ("in/img-0000.jpg", False),  # a link inside the source folder: read by default
        ("blobs/0001.jpg", True),  # a link out of it, as DVC, git-annex and the Hugging Face cache make them
    ],
)
def test_a_sql_only_rerun_does_not_search_a_linked_image_again(
    tmp_path, searchapi_emulator, searchapi_connection, sqlite_conn_id, target, follow_symlinks
):
    write_images(tmp_path / "in", 2)
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "0001.jpg").write_bytes(make_jpeg(99))
    (tmp_path / "in" / "link.jpg").symlink_to(tmp_path / target)
    run = {
        "source": f"file://{tmp_path}/in/",
        "sql_conn_id": sqlite_conn_id,
        "sql_table": "found",
        "follow_symlinks": follow_symlinks,
    }
    assert _run(**run)["searched"] == 3
    before = searches(searchapi_emulator)

    again = _run(**run)
    assert (again["searched"], again["changed"], again["skipped_done"]) == (0, 0, 3)
    assert searches(searchapi_emulator) == before


def test_shards_of_a_folder_already_run_pay_for_nothing(tmp_path, searchapi_emulator, searchapi_connection):
    images = write_images(tmp_path / "in", 2)
    (tmp_path / "in" / "link.jpg").symlink_to(images[0])
    source, output = f"file://{tmp_path}/in/", f"file://{tmp_path}/out/"
    assert _run(source=source, output_path=output)["searched"] == 3
    before = searches(searchapi_emulator)

    for shard in shard_images(source, 2):
        summary = _run(source=shard, output_path=output)
        assert summary["searched"] == 0, summary
    assert searches(searchapi_emulator) == before


def test_a_link_loop_does_not_pay_for_an_image_many_times(tmp_path, searchapi_emulator, searchapi_connection):
    write_images(tmp_path / "in", 1)
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "up").symlink_to(tmp_path / "in")  # a loop back to the source folder
    try:
        _run(source=f"file://{tmp_path}/in/", output_path=f"file://{tmp_path}/out/", follow_symlinks=True)
    except Exception:  # noqa: BLE001 - refusing the loop would be fine too; paying 40 times is not
        pass
    assert searches(searchapi_emulator) <= 1


def test_folder_marker_objects_are_not_listed_as_images(bucket, s3_conn_id):
    images = ObjectStoragePath(f"{bucket}/images/", conn_id=s3_conn_id)
    fs, name = images.fs, bucket.removeprefix("s3://")
    fs.call_s3("put_object", Bucket=name, Key="images/", Body=b"")  # what "create folder" makes
    fs.call_s3("put_object", Bucket=name, Key="images/sub/", Body=b"")
    (images / "sub" / "a.jpg").write_bytes(make_jpeg(1))
    assert [s.uri for s in list_images(f"{bucket}/images/", conn_id=s3_conn_id)] == [f"{bucket}/images/sub/a.jpg"]


@pytest.mark.parametrize("first", ["{tmp}/in/", "file://{tmp}//in/"])
def test_the_same_folder_named_another_way_pays_for_nothing(tmp_path, searchapi_emulator, searchapi_connection, first):
    write_images(tmp_path / "in", 2)
    output = f"file://{tmp_path}/out/"
    assert _run(source=first.format(tmp=tmp_path), output_path=output)["searched"] == 2
    before = searches(searchapi_emulator)

    again = _run(source=f"file://{tmp_path}/in/", output_path=output)
    assert (again["searched"], again["skipped_done"]) == (0, 2)
    assert searches(searchapi_emulator) == before


def test_shards_read_local_names_that_are_not_utf8(tmp_path):
    import os

    from airflow_provider_searchapi.engine.sources import images_from_paths, read_image

    (tmp_path / "in").mkdir()
    with open(os.fsencode(tmp_path / "in") + b"/caf\xe9.jpg", "wb") as handle:
        handle.write(make_jpeg(1))
    (shard,) = shard_images(f"file://{tmp_path}/in/", 1)
    (source,) = images_from_paths(shard)
    assert read_image(source)[0] == make_jpeg(1)
