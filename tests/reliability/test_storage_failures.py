"""A storage failure while writing results never leaves a part that looks committed."""

from __future__ import annotations

import json
import secrets
import shutil

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, JsonLinesSink, list_images, sinks
from airflow_provider_searchapi.engine.records import RESULT_COLUMNS
from tests.conftest import write_images


def _fail_third_part(monkeypatch, fs, failing: str) -> None:
    """Make the third part written under ``_tmp/`` fail: while its bytes are written (half of them land
    first, as when the connection breaks mid-upload or the disk fills up), or when it is moved into place."""
    original = getattr(fs, failing)
    calls = {"n": 0}

    def flaky(path, *args, **kwargs):
        under_tmp = "/_tmp/" in path and (failing == "mv" or args[0] == "wb")  # open(…, "wt") opens "wb" inside
        if under_tmp:
            calls["n"] += 1
        if not under_tmp or calls["n"] != 3:
            return original(path, *args, **kwargs)
        if failing == "mv":
            raise OSError("storage failed during mv")
        handle = original(path, *args, **kwargs)
        write = handle.write

        def half_then_fail(data):
            write(data[: len(data) // 2])
            raise OSError("storage failed during open")

        handle.write = half_then_fail
        return handle

    monkeypatch.setattr(fs, failing, flaky)


# Every store is written through its fsspec filesystem: streamed under _tmp/, then mv into place.
@pytest.mark.parametrize("store, failing", [("local", "open"), ("local", "mv"), ("s3", "open"), ("s3", "mv")])
def test_failure_mid_write_leaves_only_complete_parts(store, failing, make_hook, tmp_path, monkeypatch, request):
    write_images(tmp_path / "in", 24)
    hook = make_hook("api_key", requests_per_second=1000)
    if store == "local":
        prefix = ObjectStoragePath(f"file://{tmp_path}/out/")
    else:
        bucket, conn_id = request.getfixturevalue("bucket"), request.getfixturevalue("s3_conn_id")
        prefix = ObjectStoragePath(f"{bucket}/out/", conn_id=conn_id)
    settings = EnrichmentSettings(max_concurrency=4, commit_every=2)
    with monkeypatch.context() as patched:
        _fail_third_part(patched, prefix.fs, failing)
        with pytest.raises(OSError, match=f"storage failed during {failing}"):
            Enricher(hook, [JsonLinesSink(prefix)], settings).run(list_images(f"file://{tmp_path}/in/"))

    parts = list((prefix / "results").iterdir())
    assert parts and all(part.name.endswith(".jsonl") for part in parts)
    for part in parts:  # every committed part is whole: each line parses, each source complete
        rows = [json.loads(line) for line in part.read_text().splitlines()]
        for uri in {row["source_uri"] for row in rows}:
            ranks = [row["rank"] for row in rows if row["source_uri"] == uri]
            assert ranks == list(range(len(ranks)))
    committed = JsonLinesSink(prefix).done_sources()
    assert 0 < len(committed) < 24
    summary = Enricher(hook, [JsonLinesSink(prefix)], settings).run(list_images(f"file://{tmp_path}/in/"))
    assert summary.skipped_done == len(committed) and summary.searched + len(committed) == 24
    rows = [json.loads(line) for part in (prefix / "results").iterdir() for line in part.read_text().splitlines()]
    assert len({row["source_uri"] for row in rows}) == 24
    assert len(rows) == len({(row["source_uri"], row["rank"]) for row in rows})


def test_local_output_folders_are_made_when_missing_even_mid_run(tmp_path):
    """Folders are made for a run's first parts, and again when someone removed the output while the
    run went on."""
    out = tmp_path / "deep" / "out"
    sink = JsonLinesSink(ObjectStoragePath(f"file://{out}/"))
    found = {"source_uri": "file:///in/a.jpg", "rank": 0}
    refused = {"source_uri": "file:///in/b.jpg", "retryable": 0}
    sink.write(sinks.Batch(results=[found], errors=[refused], sources=2))
    shutil.rmtree(out)
    sink.write(sinks.Batch(results=[{**found, "source_uri": "file:///in/c.jpg"}], sources=1))
    parts = list(sink.parts)
    sink.finish({"searched": 3})

    (part,) = (out / "results").iterdir()
    assert parts[-1] == f"file://{part}"
    assert [json.loads(line)["source_uri"] for line in part.read_text().splitlines()] == ["file:///in/c.jpg"]
    assert not list((out / "_tmp").iterdir())  # every part was renamed into place
    (manifest,) = (out / "_manifest").iterdir()
    assert json.loads(manifest.read_text())["parts"] == parts and len(parts) == 3


def test_json_lines_keep_the_column_order_whatever_the_rows_order(tmp_path):
    """Rows are projected onto the columns (missing ones null, extra ones dropped), in their order."""
    out = tmp_path / "out"
    sink = JsonLinesSink(ObjectStoragePath(f"file://{out}/"))
    ordered = dict.fromkeys(RESULT_COLUMNS, "x")
    shuffled = {"extra": 1, **dict(reversed(list(ordered.items())))}
    del shuffled["url"]
    sink.write(sinks.Batch(results=[ordered, shuffled], sources=2))

    (part,) = (out / "results").iterdir()
    first, second = (json.loads(line) for line in part.read_text().splitlines())
    assert tuple(first) == tuple(second) == RESULT_COLUMNS
    assert first == ordered and second == {**ordered, "url": None}


def test_a_local_output_without_a_scheme_lands_where_resume_looks(tmp_path, monkeypatch):
    """``~/out`` (an ``output_path`` without ``file://``) is the folder fsspec resolves, home expanded:
    the parts land there, resume finds them, and the parts' URIs say ``file://``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sink = JsonLinesSink(ObjectStoragePath("~/out/"))
    sink.write(sinks.Batch(results=[{"source_uri": "file:///in/a.jpg", "rank": 0}], sources=1))

    (part,) = (tmp_path / "out" / "results").iterdir()
    assert sink.parts == [f"file://{part}"]
    assert not (tmp_path / "~").exists()
    assert JsonLinesSink(ObjectStoragePath("~/out/")).done_sources() == {"file:///in/a.jpg"}


def test_a_part_written_to_a_missing_bucket_fails_and_creates_no_bucket(s3_conn_id):
    """Object stores have no folders to make: a commit never creates a bucket (s3fs's makedirs would),
    so a mistyped bucket name fails the run instead of filling a new bucket."""
    name = f"no-such-{secrets.token_hex(4)}"
    missing = ObjectStoragePath(f"s3://{name}/out/", conn_id=s3_conn_id)
    with pytest.raises(FileNotFoundError, match=rf"^s3://{name}/out/results/part-.*: .*bucket does not exist"):
        JsonLinesSink(missing).write(sinks.Batch(results=[{"source_uri": "file:///in/a.jpg"}], sources=1))
    assert not missing.fs.exists(name)


def test_a_filesystem_with_real_folders_gets_them_made(tmp_path):
    """Other storage than object stores (SFTP, HDFS, …: here fsspec's DirFileSystem) needs its folders."""
    from fsspec.implementations.dirfs import DirFileSystem

    from airflow_provider_searchapi.jsonl import commit_lines, read_jsonl

    fs = DirFileSystem(str(tmp_path))
    final = commit_lines(fs, "out", "results/part-1.jsonl", ['{"source_uri": "file:///in/a.jpg"}\n'])
    assert [row for _, row in read_jsonl(fs, final)] == [{"source_uri": "file:///in/a.jpg"}]
    assert fs.ls("out/_tmp") == []  # the part was moved out of it
