"""Hostile files and servers: nothing hangs, nothing blocks a run forever, nothing lists silently empty."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_searchapi.engine import (
    Enricher,
    EnrichmentSettings,
    JsonLinesSink,
    SqlSink,
    XComSink,
    images_from_paths,
    list_images,
)
from airflow_provider_searchapi.engine.downscale import downscale_to_limit
from airflow_provider_searchapi.exceptions import SearchApiHTTPError, SearchApiResponseError, redact
from airflow_provider_searchapi.retry import RetryPolicy
from tests.conftest import make_jpeg

ONE_ATTEMPT = RetryPolicy(max_attempts=1)


def _run(hook, sources, sinks, **settings):
    return Enricher(hook, sinks, EnrichmentSettings(**settings)).run(sources)


# -- names, kinds and links ---------------------------------------------------------------------
def test_a_name_that_is_not_utf8_becomes_a_percent_encoded_uri(make_hook, tmp_path, sqlite_conn_id):
    folder = tmp_path / "in"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as handle:
        handle.write(make_jpeg(1))
    (folder / "plain.jpg").write_bytes(make_jpeg(2))
    sinks = [JsonLinesSink(ObjectStoragePath(f"file://{tmp_path}/out/")), SqlSink(sqlite_conn_id, "found")]
    summary = _run(make_hook("api_key", requests_per_second=1000), list_images(f"file://{folder}/"), sinks)
    assert (summary.searched, summary.failed) == (2, 0)
    with sqlite3.connect(tmp_path / "results.db") as db:
        uris = {row[0] for row in db.execute("SELECT source_uri FROM found")}
    assert uris == {f"file://{folder}/caf%E9.jpg", f"file://{folder}/plain.jpg"}
    # a re-run finds both done: nothing is paid for twice
    again = _run(make_hook("api_key", requests_per_second=1000), list_images(f"file://{folder}/"), sinks)
    assert again.skipped_done == 2 and again.requests == 0


def test_a_named_pipe_is_an_error_row_and_never_opened(make_hook, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")  # opening it for reading would block forever
    (folder / "ok.jpg").write_bytes(make_jpeg(3))
    sink = XComSink()
    started = time.monotonic()
    summary = _run(make_hook("api_key", requests_per_second=1000), list_images(f"file://{folder}/"), [sink])
    assert time.monotonic() - started < 30
    assert (summary.searched, summary.failed) == (1, 1)
    (error,) = sink.errors
    assert error["source_uri"].endswith("/pipe.jpg") and "not a regular file" in error["message"]


def test_links_out_of_the_source_folder_are_not_followed(make_hook, tmp_path):
    secret = tmp_path / "in-other" / "secret.jpg"  # a sibling whose name begins with the folder's
    secret.parent.mkdir()
    secret.write_bytes(make_jpeg(4))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "link.jpg").symlink_to(secret)
    (folder / "inside.jpg").write_bytes(make_jpeg(5))
    (folder / "inner-link.jpg").symlink_to(folder / "inside.jpg")
    sink = XComSink()
    hook = make_hook("api_key", requests_per_second=1000)
    summary = _run(hook, list_images(f"file://{folder}/"), [sink])
    assert (summary.searched, summary.failed) == (2, 1)
    assert "outside the source folder" in sink.errors[0]["message"] and "/link.jpg" in sink.errors[0]["message"]
    followed = _run(hook, list_images(f"file://{folder}/"), [XComSink()], follow_symlinks=True)
    assert (followed.searched, followed.failed) == (3, 0)


def test_the_same_path_listed_three_times_is_searched_once(make_hook, tmp_path, searchapi_emulator):
    path = tmp_path / "a.jpg"
    path.write_bytes(make_jpeg(6))
    summary = _run(
        make_hook("api_key", requests_per_second=1000), images_from_paths([f"file://{path}"] * 3), [XComSink()]
    )
    assert summary.searched == 1 and searchapi_emulator.stats.snapshot()["search_requests"] == 1


# -- listings ------------------------------------------------------------------------------------
def test_a_source_that_matches_nothing_fails_naming_it(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"x")
    for source in (f"file://{tmp_path}/photos/*.jgp", f"file://{tmp_path}/missing/**/*.jpg"):
        with pytest.raises(FileNotFoundError, match="matched no files") as info:
            list(list_images(source))
        assert source.rsplit("/", 1)[1] in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/' matched no files"):
        list(list_images(f"file://{tmp_path}/empty/"))
    assert list(list_images(f"file://{tmp_path}/photos/*.jgp", allow_empty=True)) == []


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_source_is_refused_not_read_as_the_working_folder(
    source, tmp_path, monkeypatch, searchapi_connection, searchapi_emulator
):
    """A template rendered empty (a param left blank) must not list the worker's current folder."""
    from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jpg").write_bytes(make_jpeg(1))
    with pytest.raises(ValueError, match=rf"^source {source!r} is empty: give a file, a folder or a glob"):
        list(list_images(source, allow_empty=True))
    op = SearchByImageOperator(task_id="t", source="{{ params.source }}", output="xcom")
    op.source = source  # as rendered
    with pytest.raises(ValueError, match="is empty"):
        op.execute({})
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_an_empty_match_that_is_allowed_says_so_in_the_log(tmp_path, caplog):
    """``allow_empty=True`` succeeds, and the log says that nothing was listed and where."""
    (tmp_path / "empty").mkdir()
    for source in (f"file://{tmp_path}/empty/", f"file://{tmp_path}/empty/*.jpg", f"file://{tmp_path}/missing/**"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="airflow_provider_searchapi"):
            assert list(list_images(source, allow_empty=True)) == []
        assert [r.getMessage() for r in caplog.records] == [f"0 images listed: source {source!r} matched no files"]


def test_the_operator_fails_on_an_empty_match_unless_allowed(tmp_path, searchapi_connection):
    from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator

    (tmp_path / "in").mkdir()
    kwargs = {"task_id": "t", "source": f"file://{tmp_path}/in/*.jpg", "output": "xcom"}
    with pytest.raises(FileNotFoundError, match=r"\*\.jpg' matched no files"):
        SearchByImageOperator(**kwargs).execute({})
    assert SearchByImageOperator(**kwargs, allow_empty=True).execute({})["searched"] == 0


def test_a_folder_whose_name_holds_glob_characters_is_a_folder(tmp_path):
    folder = tmp_path / "photos [2020]"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(make_jpeg(7))
    assert [s.uri for s in list_images(f"file://{folder}/")] == [f"file://{folder}/a.jpg"]


def test_a_star_stays_within_its_level_and_deeper_folders_are_not_walked(tmp_path, monkeypatch):
    (tmp_path / "a.jpg").write_bytes(b"x")
    deep = tmp_path / "sub" / "deeper"
    deep.mkdir(parents=True)
    (deep / "b.jpg").write_bytes(b"x")
    scanned: list[str] = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: scanned.append(str(path)) or real_scandir(path))
    assert [s.uri.rsplit("/", 1)[1] for s in list_images(f"file://{tmp_path}/*.jpg")] == ["a.jpg"]
    assert scanned == [str(tmp_path)]


def test_a_big_folder_is_streamed_not_loaded(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(20_000):
        (folder / f"{n:05d}.jpg").touch()
    tracemalloc.start()
    try:
        iterator = list_images(f"file://{folder}/")
        first = [next(iterator) for _ in range(10)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(first) == 10 and peak < 2 * 1024 * 1024  # a whole listing of 20,000 names would be several MB
    assert sum(1 for _ in iterator) == 20_000 - 10


def test_an_s3_prefix_is_listed_page_by_page(bucket, s3_conn_id):
    root = ObjectStoragePath(f"{bucket}/many/", conn_id=s3_conn_id)
    root.fs.pipe({f"{root.path.rstrip('/')}/{n:05d}.jpg": b"x" for n in range(1_200)})  # two pages: 1,000 and 200
    iterator = list_images(f"{bucket}/many/", conn_id=s3_conn_id)
    first = next(iterator)
    assert first.uri == f"{bucket}/many/00000.jpg" and first.etag
    assert len(list(iterator)) == 1_199


# -- servers -------------------------------------------------------------------------------------
class _RawServer:
    """Answers every request on 127.0.0.1 with ``head`` at once, then ``body`` a byte every ``pace`` s."""

    def __init__(self, head: bytes, body: bytes, pace: float = 0.0) -> None:
        self.head, self.body, self.pace = head, body, pace
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(client,), daemon=True).start()

    def _answer(self, client: socket.socket) -> None:
        with client:
            try:
                client.recv(1 << 20)
                client.sendall(self.head)
                if not self.pace:
                    client.sendall(self.body)
                for byte in self.body if self.pace else b"":
                    if self.stop.is_set():
                        return
                    client.sendall(bytes([byte]))
                    time.sleep(self.pace)
            except OSError:
                pass


@pytest.fixture
def raw_server() -> Iterator:
    servers: list[_RawServer] = []

    def start(head: bytes, body: bytes, pace: float = 0.0) -> _RawServer:
        servers.append(_RawServer(head, body, pace))
        return servers[-1]

    yield start
    for server in servers:
        server.stop.set()
        server.sock.close()


@pytest.mark.serial  # measures time
@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_trickling_server_ends_in_a_timeout_within_the_deadline(make_hook, raw_server, path):
    body = b'{"images": []}' + b" " * 200
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    server = raw_server(head, body, pace=0.5)  # 100 s to send it all, and never 1 s without a byte
    hook = make_hook("api_key", endpoint=server.url, timeout=1.5, retry_policy=ONE_ATTEMPT)
    started = time.monotonic()
    with pytest.raises(SearchApiHTTPError) as info:
        if path == "sync":
            hook.search_by_image(url="https://example.com/a.jpg")
        else:
            asyncio.run(hook.asearch_by_image(url="https://example.com/a.jpg"))
    assert time.monotonic() - started < 5
    assert info.value.status == 0 and "no answer within 1.5 s" in info.value.message and info.value.retryable


def test_an_answer_of_millions_of_empty_results_is_refused_cheaply(make_hook, raw_server):
    body = gzip.compress(b'{"images": [' + b"{}," * 3_000_000 + b"{}]}")  # ~9 MB of JSON in ~9 KB
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    server = raw_server(head, body)
    hook = make_hook("api_key", endpoint=server.url, retry_policy=ONE_ATTEMPT)
    tracemalloc.start()
    try:
        with pytest.raises(SearchApiResponseError, match="larger than 1,048,576 bytes"):
            hook.search_by_image(url="https://example.com/a.jpg")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024


@pytest.mark.serial  # measures time
def test_the_event_loop_keeps_turning_while_large_images_are_downscaled(make_hook, tmp_path):
    from PIL import Image

    folder = tmp_path / "big"
    folder.mkdir()
    for n in range(3):
        noise = Image.effect_noise((3000, 3000), 80 + n).convert("RGB")
        noise.save(folder / f"{n}.jpg", quality=97)
    assert all(path.stat().st_size > 3 * 1024 * 1024 for path in folder.iterdir())
    hook = make_hook("api_key", requests_per_second=1000)
    enricher = Enricher(hook, [XComSink()], EnrichmentSettings(downscale_oversized=True))
    lags: list[float] = []

    async def watch(run: asyncio.Task) -> None:
        while not run.done():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    async def both() -> None:
        run = asyncio.ensure_future(enricher.arun(list_images(f"file://{folder}/")))
        await asyncio.gather(run, watch(run))

    asyncio.run(both())
    assert enricher.summary.searched == 3
    # A loop that downscaled in place would stall for a whole downscale; timing one here keeps the
    # bound fair on a busy machine, where both the downscale and the loop's turns are slower.
    started = time.monotonic()
    downscale_to_limit((folder / "0.jpg").read_bytes(), name="0.jpg")
    one_downscale = time.monotonic() - started
    assert max(lags) < max(0.1, one_downscale / 2), f"stalled {max(lags):.2f} s; a downscale: {one_downscale:.2f} s"


# -- outputs and messages ------------------------------------------------------------------------
def test_table_names_are_matched_whole_and_schema_names_work_on_sqlite(sqlite_conn_id, make_hook, tmp_path):
    for bad in ("results\n", "results;", "a.b.c", "1table"):
        with pytest.raises(ValueError, match="sql_table"):
            SqlSink(sqlite_conn_id, bad)
    path = tmp_path / "a.jpg"
    path.write_bytes(make_jpeg(8))
    sink = SqlSink(sqlite_conn_id, "main.found")
    assert _run(make_hook("api_key", requests_per_second=1000), images_from_paths([f"file://{path}"]), [sink]).searched
    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("SELECT COUNT(*) FROM found").fetchone()[0] == 10
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall() == [
            ("found_source_uri_idx",)
        ]


def test_credentials_in_server_messages_are_redacted(make_hook, raw_server):
    token = "t1.9euelZqVnpKQiouTzYqNm5KKm5CXkO3rnpWazc2Lm42Jx5ea"
    body = json.dumps({"code": 3, "message": f"bad header Bearer {token} and key AQVN1234567890abcdefghij"}).encode()
    server = raw_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(body), body)
    hook = make_hook("api_key", endpoint=server.url, retry_policy=ONE_ATTEMPT)
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(url="https://example.com/a.jpg")
    assert token not in str(info.value) and "AQVN1234567890" not in str(info.value)
    assert info.value.message == "bad header [redacted] and key [redacted]"
    assert redact("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----") == "[redacted]"


@pytest.mark.parametrize("shape", ["message", "text"])
def test_a_server_quoting_a_credential_of_no_known_shape_does_not_show_it(make_hook, raw_server, shape):
    key = "opaque-key-of-a-new-kind-" + "x" * 1000  # long: a cut of the message would keep its start
    quoted = f"unknown API key {key}"
    body = json.dumps({"code": 16, "message": quoted}).encode() if shape == "message" else quoted.encode()
    server = raw_server(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n" % len(body), body)
    hook = make_hook("api_key", api_key=key, endpoint=server.url, retry_policy=ONE_ATTEMPT)
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(url="https://example.com/a.jpg")
    assert "unknown API key" in str(info.value) and "opaque-key" not in f"{info.value} {info.value!r}"


def test_credentials_to_a_plain_http_endpoint_elsewhere_are_warned_about(make_hook, caplog, capsys):
    def logged() -> str:
        return capsys.readouterr().out + "".join(record.getMessage() for record in caplog.records)

    with caplog.at_level(logging.WARNING):
        _ = make_hook("api_key", endpoint="http://searchapi.example.com").config
        text = logged()
        assert "plain http:// to another machine" in text and "searchapi.example.com" in text
        caplog.clear()
        _ = make_hook("api_key", conn_id="loopback").config  # the emulator on 127.0.0.1
        assert "plain http://" not in logged()
