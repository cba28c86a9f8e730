"""Hostile input: bombs, unreadable objects, odd keys, escaping outputs, malformed answers."""

from __future__ import annotations

import struct
import zlib

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_searchapi.engine import (
    Enricher,
    EnrichmentSettings,
    JsonLinesSink,
    XComSink,
    images_from_paths,
    images_from_urls,
    list_images,
)
from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.images import check_image
from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from airflow_provider_searchapi.transport.rest import MAX_RESPONSE_BYTES
from tests.conftest import make_jpeg


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_declaring(width: int, height: int) -> bytes:
    real = make_jpeg(1)
    sof = real.index(b"\xff\xc0")
    return real[: sof + 5] + struct.pack(">HH", height, width) + real[sof + 9 :]


@pytest.mark.parametrize("data", [_png_header(100_000, 100_000), _jpeg_declaring(65_000, 65_000)])
def test_decompression_bombs_are_refused_from_the_header(data):
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        check_image(data, name="bomb")


def test_bombs_and_zero_sized_headers_are_recorded_not_sent(make_hook, searchapi_emulator, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    (folder / "zero.png").write_bytes(_png_header(0, 10))
    (folder / "fine.png").write_bytes(_png_header(64, 48))
    sink = XComSink()
    Enricher(make_hook("api_key", requests_per_second=1000), [sink]).run(list_images(f"file://{folder}/"))
    errors = {row["source_uri"].rsplit("/", 1)[1]: row["message"] for row in sink.errors}
    assert set(errors) == {"bomb.png", "zero.png"}
    assert "decompression bomb" in errors["bomb.png"] and "PNG image whose header cannot be read" in errors["zero.png"]
    assert searchapi_emulator.stats.snapshot()["uploads"] == 1


def test_unreadable_objects_are_read_errors(make_hook, bucket, s3_conn_id, tmp_path):
    gone = ObjectStoragePath(f"{bucket}/images/gone.jpg", conn_id=s3_conn_id)
    gone.write_bytes(make_jpeg(1))
    kept = ObjectStoragePath(f"{bucket}/images/kept.jpg", conn_id=s3_conn_id)
    kept.write_bytes(make_jpeg(2))
    listed = list(list_images(f"{bucket}/images/", conn_id=s3_conn_id))
    gone.unlink()  # deleted between listing and reading
    sources = listed + list(images_from_paths([f"file://{tmp_path}/never-existed.jpg"]))
    sink = XComSink()
    summary = Enricher(make_hook("api_key", requests_per_second=1000), [sink]).run(sources)
    assert (summary.searched, summary.failed) == (1, 2)
    by_uri = {row["source_uri"]: row for row in sink.errors}
    assert by_uri[f"{bucket}/images/gone.jpg"]["stage"] == "read"
    assert by_uri[f"file://{tmp_path}/never-existed.jpg"]["error_class"] == "FileNotFoundError"
    assert all(row["retryable"] == 1 for row in sink.errors)


def test_keys_with_odd_characters(make_hook, bucket, s3_conn_id):
    names = ["a b/ümlaut #1.jpg", "100%.jpg", "plus+sign.jpg", "quote'\".jpg", "семь/日本.jpg", "q?x=1&y.jpg"]
    root = ObjectStoragePath(f"{bucket}/odd/", conn_id=s3_conn_id)
    for seed, name in enumerate(names):
        (root / name).write_bytes(make_jpeg(seed))
    sink = XComSink()
    summary = Enricher(make_hook("api_key", requests_per_second=1000), [sink]).run(
        list_images(f"{bucket}/odd/", conn_id=s3_conn_id)
    )
    assert (summary.searched, summary.failed) == (len(names), 0)
    assert {row["source_uri"] for row in sink.results} == {f"{bucket}/odd/{name}" for name in names}


@pytest.mark.parametrize("output_path", ["file:///tmp/results/../../etc/", "s3://bucket/out/../other/"])
def test_an_output_path_escaping_its_folder_is_refused_before_any_call(
    output_path, searchapi_connection, searchapi_emulator
):
    with pytest.raises(ValueError, match=r"output_path .* '\.\.' segment"):
        JsonLinesSink(ObjectStoragePath(output_path))
    op = SearchByImageOperator(task_id="t", image_urls=["https://x/y.jpg"], output_path=output_path)
    with pytest.raises(ValueError, match="'..' segment"):
        op.execute({})
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


@pytest.mark.parametrize(
    "kind, words",
    [
        ("garbage", "unreadable answer"),
        ("wrong-types", "unreadable answer"),
        ("giant", f"larger than {MAX_RESPONSE_BYTES:,} bytes"),
    ],
)
def test_malformed_answers_are_named_errors(make_hook, searchapi_emulator, kind, words):
    searchapi_emulator.settings.update({"fault_rate": 0.5, "fault_kinds": [kind]})
    sink = XComSink()
    urls = [f"https://x/{i}.jpg" for i in range(20)]
    summary = Enricher(
        make_hook("api_key", requests_per_second=1000), [sink], EnrichmentSettings(max_concurrency=4)
    ).run(images_from_urls(urls))
    assert summary.searched + summary.failed == 20 and 0 < summary.failed < 20
    assert {row["error_class"] for row in sink.errors} == {"SearchApiResponseError"}
    assert all(words in row["message"] and row["stage"] == "api" for row in sink.errors)
