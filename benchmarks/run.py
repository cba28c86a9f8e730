"""What to expect of the enrichment engine, measured against the emulator in its own process on 127.0.0.1.

    .venv/bin/python benchmarks/run.py --quick          # small sizes, a few minutes
    .venv/bin/python benchmarks/run.py                  # full sizes, under 20 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --only quota,memory --runs 3
    .venv/bin/python benchmarks/run.py --write-docs     # also put the table into docs/performance.md

Uses only the package's public API: ``SearchApiHook``, ``Enricher`` with a ``JsonLinesSink`` over
``file://``, ``list_images``. A scenario is one function in ``SCENARIOS`` that returns table rows, each
with its goal; figures are medians of ``--runs`` runs. Memory is read from Linux's ``/proc``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

CACHE = Path(__file__).resolve().parent / ".cache"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
MARKERS = ("<!-- results -->", "<!-- /results -->")
CONN_ID = "searchapi_bench"
UNLIMITED = 1e6  # requests_per_second for runs without a quota


@dataclass
class Row:
    measure: str
    result: str
    goal: str = "—"
    met: bool | None = None  # None: a figure for information


@dataclass
class Options:
    quick: bool  # small sizes
    runs: int  # runs per figure (medians are reported)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the emulator and the connection ------------------------------------------------------------------
@dataclass
class Emulator:
    url: str
    connection: dict[str, Any]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_emulator/stats", timeout=30).json()

    def use(self, **extra: object) -> None:
        """Point the ``searchapi_bench`` connection (from the environment, as Airflow reads it) here."""
        connection = {**self.connection, "extra": {**self.connection["extra"], **extra}}
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(connection)


@contextmanager
def emulator(*flags: str) -> Iterator[Emulator]:
    """``python -m airflow_provider_searchapi.testing.emulator`` with ``flags``, for the block's duration."""
    with tempfile.TemporaryDirectory() as work:
        conn, ready = Path(work, "conn.json"), Path(work, "ready")
        command = [sys.executable, "-m", "airflow_provider_searchapi.testing.emulator", "--conn-out", str(conn)]
        process = subprocess.Popen([*command, "--ready-file", str(ready), *flags], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (ready.exists() and ready.read_text()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the emulator did not start (flags {flags})")
                time.sleep(0.05)
            yield Emulator(ready.read_text(), json.loads(conn.read_text()))
        finally:
            process.terminate()
            process.wait(timeout=30)


# -- images and runs ------------------------------------------------------------------------------------
def images(count: int, name: str = "small") -> str:
    """URL of a folder of ``count`` distinct small JPEGs in sub-folders of 1,000 (made once, cached);
    folders of other names hold other images."""
    folder, complete = CACHE / f"{name}-{count}", CACHE / f"{name}-{count}.complete"
    if not complete.exists():
        log(f"writing {count:,} small JPEGs into {folder} (once)")
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (120, 80, 40)).save(buffer, "JPEG", quality=80)
        jpeg = buffer.getvalue()
        for index in range(count):
            sub = folder / f"{index // 1000:04d}"
            sub.mkdir(parents=True, exist_ok=True)
            comment = f"{name} image {index}".encode()  # a JPEG comment segment makes each file distinct
            segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
            (sub / f"{index}.jpg").write_bytes(jpeg[:2] + segment + jpeg[2:])
        complete.touch()
    return f"file://{folder}/"


def enrich(source: str, requests_per_second: float | None = None, **settings: Any) -> dict[str, Any]:
    """One engine run in this process into a JSON Lines sink: its summary, wall and CPU seconds."""
    # Imported here so that AIRFLOW_HOME (set in main) applies.
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, JsonLinesSink, list_images
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    hook = SearchApiHook(CONN_ID, requests_per_second=requests_per_second)
    with tempfile.TemporaryDirectory() as out:
        sink = JsonLinesSink(ObjectStoragePath(f"file://{out}/"))
        enricher = Enricher(hook, [sink], EnrichmentSettings(**settings))
        cpu, wall = time.process_time(), time.monotonic()
        summary = enricher.run(list_images(source))
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    if summary.failed:
        raise RuntimeError(f"{summary.failed} images of {source} failed")
    return {"images": summary.searched, "wall": wall, "cpu": cpu}


def own_peak_rss_mb() -> float:
    """This process's own peak RSS (``VmHWM``). Not ``ru_maxrss``: a child inherits its parent's across exec."""
    status = Path("/proc/self/status").read_text()  # Linux only
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


def child(source: str) -> None:
    """In a fresh process, as one task: enrich ``source`` with 64 in flight; print the run and its peak RSS."""
    result = enrich(source, UNLIMITED, max_concurrency=64)
    print(json.dumps({**result, "peak_rss_mb": own_peak_rss_mb()}))


def in_child(source: str) -> dict[str, Any]:
    """Run :func:`child` in a new process (with this one's connection) and return what it printed."""
    done = subprocess.run([sys.executable, __file__, "--child", source], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the child process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"a fresh process: {result['images']:,} images, peak RSS {result['peak_rss_mb']:.1f} MB")
    return result


# -- scenarios ------------------------------------------------------------------------------------------
def repeat(options: Options, once: Callable[[], dict[str, float]]) -> dict[str, list[float]]:
    """``once`` run ``options.runs`` times: each figure it returns, as a list over the runs."""
    results = [once() for _ in range(options.runs)]
    return {key: [result[key] for result in results] for key in results[0]}


def quota(options: Options) -> list[Row]:
    """The emulator enforces 10 rps with 300 ms latency; the engine runs at its defaults (10 rps)."""
    count = 600 if options.quick else 3000

    def once() -> dict[str, float]:
        with emulator("--latency", "0.3", "--quota-rps", "10") as server:
            server.use()
            wall = enrich(images(count))["wall"]
            answers = server.stats()["responses"]
        log(f"quota: {answers.get('200', 0) / wall:.2f} searches/s, {answers.get('429', 0)} × 429")
        return {"ratio": answers.get("200", 0) / wall / 10, "429": answers.get("429", 0)}

    runs = repeat(options, once)
    ratio, throttled = statistics.median(runs["ratio"]), sum(runs["429"])
    measure = f"quota-bound: {count:,} images, the server at 10 rps and 300 ms, the engine at its defaults"
    return [
        Row(f"{measure}: searches answered per second ÷ 10", f"{ratio:.3f}", "≥ 0.97", ratio >= 0.97),
        Row("quota-bound: 429 answers the client caused (all runs)", f"{throttled:.0f}", "0", throttled == 0),
    ]


def search_rate(source: str, label: str) -> dict[str, float]:
    """Images per second and client CPU per image of one run with 64 in flight and no rate limit."""
    result = enrich(source, UNLIMITED, max_concurrency=64)
    rate, cpu_ms = result["images"] / result["wall"], result["cpu"] / result["images"] * 1000
    log(f"throughput over {label}: {rate:.0f} images/s, {cpu_ms:.2f} ms of CPU per image")
    return {"rate": rate, "cpu_ms": cpu_ms}


def throughput(options: Options) -> list[Row]:
    """One process, no quota, 64 in flight, 100 ms latency, over REST and (if served) gRPC."""
    count, rows = 2000 if options.quick else 10_000, []
    grpc = importlib.util.find_spec("grpc") is not None
    with emulator("--latency", "0.1", *(["--grpc"] if grpc else [])) as server:
        for transport, label in (("rest", "REST"), ("grpc", "gRPC")):
            measure = f"one process, no quota, 64 in flight, latency 100 ms, {count:,} images over {label}"
            if transport == "grpc" and "grpc_endpoint" not in server.connection["extra"]:
                rows.append(Row(measure, "not measured: grpcio is not installed"))
                continue
            server.use(transport=transport)
            runs = repeat(options, partial(search_rate, images(count), label))
            rate, cpu_ms = statistics.median(runs["rate"]), statistics.median(runs["cpu_ms"])
            result = f"{rate:.0f} images/s ({rate / 640:.2f} of 640/s; client CPU {cpu_ms:.2f} ms/image)"
            rows.append(Row(measure, result, "≥ 200 images/s", rate >= 200))
    return rows


def memory(options: Options) -> list[Row]:
    """Peak RSS of a fresh task process enriching a small and a large folder (no quota, no latency)."""
    small, large = 1000, 20_000 if options.quick else 100_000
    with emulator() as server:
        server.use()
        peaks = {count: repeat(options, partial(in_child, images(count)))["peak_rss_mb"] for count in (small, large)}
    low, high = statistics.median(peaks[small]), statistics.median(peaks[large])
    measure = f"memory: peak RSS of a task process enriching {small:,} vs {large:,} images"
    result = f"{low:.0f} MB → {high:.0f} MB ({high - low:+.1f} MB)"
    return [Row(measure, result, "growth ≤ 50 MB", high - low <= 50)]


def tokens(options: Options) -> list[Row]:
    """IAM token exchanges: 3 runs in this process (a new hook each) and 2 fresh task processes."""
    with emulator() as server:
        server.use()
        for _ in range(3):
            enrich(images(1000), UNLIMITED)
        for _ in range(2):
            in_child(images(1000))
        exchanges = server.stats()["token_exchanges"]
    # One per process: every run here is far shorter than the refresh interval (60 min).
    measure = "IAM token exchanges: 3 runs with a new hook each in one process, and 2 more task processes"
    return [Row(measure, f"{exchanges} for 3 processes", "1 per process per refresh interval", exchanges == 3)]


def ledger_child(mode: str, source: str, state: str) -> None:
    """In a fresh process: list ``source`` alone (``list``), or run the engine over it with the ledger at
    ``state`` (``skip``); print the wall seconds after start-up, the peak RSS and the run's counts."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, JsonLinesSink, list_images
    from airflow_provider_searchapi.engine.ledger import Ledger
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    started, counts = time.monotonic(), {}
    if mode == "list":
        counts["listed"] = sum(1 for _ in list_images(source))
    else:
        with tempfile.TemporaryDirectory() as out:
            sinks = [JsonLinesSink(ObjectStoragePath(f"file://{out}/"))]
            run = Enricher(SearchApiHook(CONN_ID), sinks, EnrichmentSettings(), Ledger(ObjectStoragePath(state)))
            summary = run.run(list_images(source))
        counts = {"listed": summary.listed, "skipped": summary.skipped_done, "requests": summary.requests}
    print(json.dumps({**counts, "wall": time.monotonic() - started, "peak_rss_mb": own_peak_rss_mb()}))


def ledger(options: Options) -> list[Row]:
    """A ledger holding every source of a folder (in 100 parts, as a crashed run leaves them): a run over
    the folder skips them all. Compared with a process that only lists the folder."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import list_images
    from airflow_provider_searchapi.engine.ledger import SEARCHED, Ledger, fingerprint

    count = 20_000 if options.quick else 100_000
    source = images(count)

    def in_child(mode: str, state: str) -> dict[str, Any]:
        command = [sys.executable, __file__, "--ledger-child", mode, source, state]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the child process failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def once() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as folder:
            state, rows = f"file://{folder}/", [(s.uri, fingerprint(s), SEARCHED) for s in list_images(source)]
            writer = Ledger(ObjectStoragePath(state))
            for start in range(0, count, count // 100):
                writer.record(rows[start : start + count // 100])
            listing, skipping = in_child("list", state), in_child("skip", state)
        if (skipping["skipped"], skipping["requests"]) != (count, 0):
            raise RuntimeError(f"the ledger run searched or missed sources: {skipping}")
        rss = skipping["peak_rss_mb"] - listing["peak_rss_mb"]
        wall = skipping["wall"] - listing["wall"]
        log(f"ledger of {count:,}: +{rss:.1f} MB peak RSS, +{wall:.2f} s over listing alone")
        return {"rss": rss, "wall": wall}

    with emulator() as server:
        server.use()
        runs = repeat(options, once)
    rss, wall = statistics.median(runs["rss"]), statistics.median(runs["wall"])
    measure = f"ledger: a run over {count:,} images all done in a ledger of 100 parts, beyond listing them alone"
    return [
        Row(f"{measure}: peak RSS added", f"{rss:+.1f} MB", "≤ 100 MB", rss <= 100),
        Row(f"{measure}: time added", f"{wall:+.2f} s", "≤ 10 s", wall <= 10),
    ]


def html_report(options: Options) -> list[Row]:
    """``python -m airflow_provider_searchapi report`` in a fresh process over 10^5 result rows (10,000
    sources with 10 results each, and 100 failed ones) in JSON Lines parts of 1,000 rows; the first
    1,000 sources are real files. The same command over an empty output gives the process's own size."""
    output, empty = CACHE / "report-100000", CACHE / "report-empty"
    if not (output / "complete").exists():
        log(f"writing 100,000 result rows into {output} (once)")
        pictures = images(1000).removeprefix("file://")
        for folder in (output / "results", output / "errors", empty / "results"):
            folder.mkdir(parents=True, exist_ok=True)
        (empty / "results" / "part-empty.jsonl").touch()
        for first in range(0, 10_000, 100):
            results, errors = [], []
            for index in range(first, first + 100):
                uri, site = f"file://{pictures}{index // 1000:04d}/{index}.jpg", f"site{index % 50}.example.com"
                for rank in range(10):
                    results.append(
                        {"source_uri": uri, "source_size": 700, "cbir_id": f"{index}/x", "page": 0, "rank": rank}
                        | {"url": f"https://{site}/img/{index}-{rank}.jpg", "format": "jpeg", "width": 800}
                        | {"height": 600, "host": site, "page_title": f"Page {rank} about image {index}"}
                        | {"page_url": f"https://{site}/page/{index}-{rank}", "searched_at": "2026-01-01T00:00:00"}
                    )
            failed = {"source_uri": f"file:///missing/{first}.jpg", "stage": "api", "http_status": 429}
            errors.append(failed | {"error_class": "SearchApiHTTPError", "message": "Too many requests."})
            for kind, rows in (("results", results), ("errors", errors)):
                (output / kind / f"part-{first:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (output / "complete").touch()
    program = (
        "import json, sys, pathlib\n"
        "from airflow_provider_searchapi.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "status = pathlib.Path('/proc/self/status').read_text()\n"
        "print(json.dumps({'code': code, 'peak_rss_mb': int(status.split('VmHWM:')[1].split()[0]) / 1024}))\n"
    )

    def once() -> dict[str, float]:
        figures: dict[str, float] = {}
        for name, folder in (("empty", empty), ("full", output)):
            with tempfile.TemporaryDirectory() as work:
                page, wall = Path(work, "report.html"), time.monotonic()
                command = [sys.executable, "-c", program, "report", str(folder), "--html", str(page)]
                done = subprocess.run(command, capture_output=True, text=True)
                figures[f"{name}_wall"] = time.monotonic() - wall
                result = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
                if result.get("code") != 0:
                    raise RuntimeError(f"report failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
                figures[f"{name}_rss"], figures[f"{name}_size"] = result["peak_rss_mb"], page.stat().st_size / 1e6
        log(
            f"report: 100,000 rows in {figures['full_wall']:.1f} s, peak RSS {figures['full_rss']:.0f} MB "
            f"(an empty output: {figures['empty_wall']:.1f} s, {figures['empty_rss']:.0f} MB)"
        )
        return figures

    runs = {key: statistics.median(values) for key, values in repeat(options, once).items()}
    wall, rss, base = runs["full_wall"], runs["full_rss"], runs["empty_rss"]
    measure = "report: `report OUTPUT_PATH --html FILE` over 100,000 result rows (10,100 sources), a fresh process"
    return [
        Row(f"{measure}: wall time, start-up included", f"{wall:.1f} s", "≤ 30 s", wall <= 30),
        Row(f"{measure}: peak RSS", f"{rss:.0f} MB", "≤ 100 MB", rss <= 100),
        Row(
            "report: the same command over an empty output (the process's own size: Airflow, fsspec, Pillow)",
            f"{base:.0f} MB; the rows add {rss - base:+.0f} MB; page {runs['full_size']:.1f} MB",
        ),
    ]


def listing_child(url: str, endpoint: str) -> None:
    """In a fresh process: seconds to the first source of ``url`` (an S3 URL through moto at ``endpoint``),
    then to the last, and the process's peak RSS (``url`` "none": Airflow and the package imported only)."""
    from airflow_provider_searchapi.engine import list_images

    conn_id = None
    if endpoint:
        conn = {"conn_type": "aws", "login": "k", "password": "s", "extra": {"endpoint_url": endpoint}}
        os.environ["AIRFLOW_CONN_BENCH_S3"], conn_id = json.dumps(conn), "bench_s3"
    started, first, count = time.monotonic(), None, 0
    for _ in list_images(url, conn_id=conn_id) if url != "none" else ():
        count += 1
        first = first or time.monotonic() - started
    print(json.dumps({"first": first, "all": time.monotonic() - started, "count": count, "rss": own_peak_rss_mb()}))


def listing(options: Options) -> list[Row]:
    """A flat local folder of 300,000 files and an S3 prefix (moto's server) of 30,000 objects: seconds to
    the first source and peak RSS beyond a process that lists nothing (goals: 5 s, 50 MB)."""
    local_count, s3_count = (30_000, 3_000) if options.quick else (300_000, 30_000)
    folder = CACHE / f"flat-{local_count}"
    if not (CACHE / f"flat-{local_count}.complete").exists():
        log(f"creating {local_count:,} empty files in {folder} (once)")
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(local_count):
            (folder / f"{index:06d}.jpg").touch()
        (CACHE / f"flat-{local_count}.complete").touch()

    def measure(url: str, endpoint: str = "") -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, __file__, "--listing-child", url, endpoint], capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"the listing child failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        s3 = httpx.Client(base_url=endpoint, timeout=60)
        s3.put("/bench")
        log(f"putting {s3_count:,} objects into moto's S3")
        for index in range(s3_count):
            s3.put(f"/bench/many/{index:06d}.jpg", content=b"x")
        base = measure("none")
        local, remote = measure(f"file://{folder}/"), measure("s3://bench/many/", endpoint)
    finally:
        server.stop()
    rows = []
    for name, result, count in (("local folder", local, local_count), ("an S3 prefix (moto)", remote, s3_count)):
        if result["count"] != count:
            raise RuntimeError(f"{name}: listed {result['count']} of {count}")
        added = result["rss"] - base["rss"]
        what = f"listing: {name if name.startswith('an ') else 'a ' + name} of {count:,} files"
        rows.append(Row(f"{what}: first source after", f"{result['first']:.2f} s", "≤ 5 s", result["first"] <= 5))
        rows.append(Row(f"{what}: peak RSS added, all listed", f"{added:+.1f} MB", "≤ 50 MB", added <= 50))
        rows.append(Row(f"{what}: all listed after", f"{result['all']:.1f} s"))


@contextmanager
def redis_server() -> Iterator[subprocess.Popen[bytes]]:
    """Debian's ``redis-server`` on a free port of 127.0.0.1, as the Airflow connection ``searchapi_bench_redis``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    connection = {"conn_type": "redis", "host": "127.0.0.1", "port": port}
    os.environ["AIRFLOW_CONN_SEARCHAPI_BENCH_REDIS"] = json.dumps(connection)
    try:
        time.sleep(0.5)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def quota_child(source: str, rate_limit_conn_id: str, start_at: str) -> None:
    """In a fresh process, as one task at the connection's 10 requests/s from ``start_at`` (a time.time()
    value, so that every process starts together whatever its imports took): print the run's summary."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import Enricher, JsonLinesSink, list_images
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    logging.getLogger("airflow_provider_searchapi.redis_limiter").setLevel(logging.WARNING)
    hook = SearchApiHook(CONN_ID, rate_limit_conn_id=rate_limit_conn_id)
    with tempfile.TemporaryDirectory() as out:
        time.sleep(max(0.0, float(start_at) - time.time()))
        summary = Enricher(hook, [JsonLinesSink(ObjectStoragePath(f"file://{out}/"))]).run(list_images(source))
    print(json.dumps(summary.to_dict()))


def quota_processes(sources: list[str], rate_limit_conn_id: str, stop_redis: Callable[[], None] | None = None):
    """Run :func:`quota_child` on each source, starting together in 20 s; stop Redis 8 s into the run if
    asked. The children's summaries."""
    command, start_at = [sys.executable, __file__, "--quota-child"], time.time() + 20
    children = [
        subprocess.Popen([*command, s, rate_limit_conn_id, str(start_at)], stdout=subprocess.PIPE) for s in sources
    ]
    if stop_redis:
        time.sleep(start_at + 8 - time.time())
        stop_redis()
    runs = []
    for child_process in children:
        out, _ = child_process.communicate(timeout=900)
        if child_process.returncode:
            raise RuntimeError("a quota child process failed")
        runs.append(json.loads(out.decode().strip().splitlines()[-1]))
    return runs


def shared_quota(options: Options) -> list[Row]:
    """4 task processes × 50 images, each at 10 requests/s, against one 10 requests/s quota (300 ms):
    sharing it through Redis, adapting without Redis, and with Redis stopped 8 s into the run."""
    sources = [images(50, f"shard{index}") for index in range(4)]
    rows, measure = [], "one 10 rps quota, 300 ms, 4 task processes × 50 images each at 10 rps"
    for mode in ("redis", "adaptive", "redis stopped"):

        def once(mode: str = mode) -> dict[str, float]:
            with emulator("--latency", "0.3", "--quota-rps", "10") as server, redis_server() as redis:
                server.use()
                runs = quota_processes(
                    sources,
                    "" if mode == "adaptive" else "searchapi_bench_redis",
                    redis.terminate if mode == "redis stopped" else None,
                )
                stats = server.stats()
            answers, span = stats["responses"], stats["arrival_span"]
            done = sum(r["searched"] for r in runs)
            calls = sum(answers.values())
            log(f"shared quota, {mode}: {done} images in {span:.1f} s, {answers.get('429', 0)} × 429 of {calls}")
            return {
                "ratio": (answers.get("200", 0) - 1) / span / 10,
                "429": answers.get("429", 0) / calls,
                "done": done,
            }

        runs = repeat(options, once)
        ratio, share, done = (statistics.median(runs[key]) for key in ("ratio", "429", "done"))
        result = f"{ratio:.3f} of the quota, {share:.1%} of calls answered 429, {done:.0f} of 200 images done"
        if mode == "redis":
            rows.append(Row(f"{measure}, sharing it in Redis", result, "≥ 0.95, no 429", ratio >= 0.95 and share == 0))
        elif mode == "adaptive":
            goal_met = ratio >= 0.8 and share <= 0.1 and done == 200
            rows.append(Row(f"{measure}, adaptive without Redis", result, "all done, ≥ 0.8, 429 ≤ 10 %", goal_met))
        else:
            rows.append(Row(f"{measure}, Redis stopped 8 s in", result, "all done", done == 200))
    return rows


#: ``--only`` names a scenario by its function's name; the table follows this order.
SCENARIOS: dict[str, Callable[[Options], list[Row]]] = {
    f.__name__: f for f in (quota, throughput, memory, tokens, shared_quota, ledger, html_report, listing)
}


# -- report -------------------------------------------------------------------------------------------
def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    model, system = models[0] if models else platform.processor(), f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({model or 'CPU unknown'}), {system}, Python {platform.python_version()}"


def table(rows: list[Row]) -> str:
    lines = ["| measure | result | goal | met |", "| --- | --- | --- | --- |"]
    for row in rows:
        met = "—" if row.met is None else "met" if row.met else "**not met**"
        lines.append(f"| {row.measure} | {row.result} | {row.goal} | {met} |")
    return "\n".join(lines)


def report(rows: list[Row], options: Options, minutes: float) -> str:
    command = " ".join(["benchmarks/run.py", *(arg for arg in sys.argv[1:] if arg != "--write-docs")])
    kind = "Quick run (small sizes)" if options.quick else "Full run"
    runs = "one run" if options.runs == 1 else f"medians of {options.runs} runs"
    header = f"{kind}: `{command}` on {time.strftime('%Y-%m-%d')}, {minutes:.0f} min, {runs} per figure."
    return f"{header} Machine: {machine()}.\n\n{table(rows)}\n"


def write_docs(text: str) -> None:
    doc = DOCS.read_text()
    start, end = doc.index(MARKERS[0]) + len(MARKERS[0]), doc.index(MARKERS[1])
    DOCS.write_text(f"{doc[:start]}\n{text}{doc[end:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes in all")
    parser.add_argument("--runs", type=int, default=1, help="runs per figure; medians are reported (default 1)")
    parser.add_argument("--only", help=f"comma-separated scenarios (default all): {','.join(SCENARIOS)}")
    parser.add_argument("--write-docs", action="store_true", help="put the table into docs/performance.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ledger-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--listing-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--quota-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", str(CACHE / "airflow-home"))
    logging.getLogger("airflow_provider_searchapi").setLevel(logging.WARNING)  # no progress lines
    if args.child:
        child(args.child)
        return
    if args.ledger_child:
        ledger_child(*args.ledger_child)
        return
    if args.listing_child:
        listing_child(*args.listing_child)
    if args.quota_child:
        quota_child(*args.quota_child)
        return
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    started, options = time.monotonic(), Options(args.quick, args.runs)
    rows = [row for name in names for row in SCENARIOS[name](options)]
    text = report(rows, options, (time.monotonic() - started) / 60)
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
