"""The benchmark's scenarios beyond its four core ones (see ``run.py``, which runs them all): a shared
quota in Redis, the ledger's skip check, the HTML report, and listing huge folders.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from harness import CACHE, CONN_ID, Options, Row, emulator, images, log, own_peak_rss_mb, repeat, run_child

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

# For tests/redis_server.py: `python benchmarks/run.py` puts benchmarks/ on the path, not the repository's root.
sys.path.append(str(Path(__file__).resolve().parents[1]))


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

    def once() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as folder:
            state, rows = f"file://{folder}/", [(s.uri, fingerprint(s), SEARCHED) for s in list_images(source)]
            writer = Ledger(ObjectStoragePath(state))
            for start in range(0, count, count // 100):
                writer.record(rows[start : start + count // 100])
            listing, skipping = run_child("ledger", "list", source, state), run_child("ledger", "skip", source, state)
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
            "report: the same command over an empty output (the process's own size)",
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
        base = run_child("listing", "none", "")
        local = run_child("listing", f"file://{folder}/", "")
        remote = run_child("listing", "s3://bench/many/", endpoint)
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
    return rows


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """The tests' ``redis-server`` on 127.0.0.1, as the Airflow connection ``searchapi_bench_redis``."""
    # Imported here: tests.redis_server imports pytest, which would add ~18 MB to every measured child process.
    from tests.redis_server import RedisServer

    server = RedisServer().start()
    os.environ["AIRFLOW_CONN_SEARCHAPI_BENCH_REDIS"] = server.connection_json()
    try:
        yield server
    finally:
        server.stop()


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
    start_at = time.time() + 20
    with ThreadPoolExecutor(len(sources)) as pool:
        children = [pool.submit(run_child, "quota", s, rate_limit_conn_id, str(start_at)) for s in sources]
        if stop_redis:
            time.sleep(start_at + 8 - time.time())
            stop_redis()
        return [child.result() for child in children]


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
                    redis.stop if mode == "redis stopped" else None,
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


SCENARIOS: dict[str, Callable[[Options], list[Row]]] = {
    f.__name__: f for f in (shared_quota, ledger, html_report, listing)
}
CHILDREN: dict[str, Callable[..., None]] = {"ledger": ledger_child, "listing": listing_child, "quota": quota_child}
