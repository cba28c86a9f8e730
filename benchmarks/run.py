"""What to expect of the enrichment engine, measured against the emulator in its own process on 127.0.0.1.

    .venv/bin/python benchmarks/run.py --quick          # small sizes, a few minutes
    .venv/bin/python benchmarks/run.py                  # full sizes, under 20 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --only quota,memory --runs 3

Uses only the package's public API: ``SearchApiHook``, ``Enricher`` with a ``JsonLinesSink`` over
``file://``, ``list_images``. A scenario is one function in ``SCENARIOS`` (the four core ones here, the
others in ``scenarios_more.py``; what they share is in ``harness.py``) that returns table rows, each
with its goal; figures are medians of ``--runs`` runs. Memory is read from Linux's ``/proc``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import scenarios_more
from harness import CACHE, CONN_ID, Options, Row, emulator, images, log, own_peak_rss_mb, repeat, run_child

DOCS = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
MARKERS = ("<!-- results -->", "<!-- /results -->")
UNLIMITED = 1e6  # requests_per_second for runs without a quota


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


def enrich_child(source: str) -> None:
    """As one task: enrich ``source`` with 64 in flight; print the run and its peak RSS."""
    result = enrich(source, UNLIMITED, max_concurrency=64)
    print(json.dumps({**result, "peak_rss_mb": own_peak_rss_mb()}))


# -- scenarios ------------------------------------------------------------------------------------------
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


def throughput(options: Options) -> list[Row]:
    """One process, no quota, 64 in flight, 100 ms latency, over REST and (if served) gRPC."""
    count, rows = 2000 if options.quick else 10_000, []
    grpc = importlib.util.find_spec("grpc") is not None

    def once() -> dict[str, float]:
        result = enrich(images(count), UNLIMITED, max_concurrency=64)
        return {"rate": result["images"] / result["wall"], "cpu_ms": result["cpu"] / result["images"] * 1000}

    with emulator("--latency", "0.1", *(["--grpc"] if grpc else [])) as server:
        for transport, label in (("rest", "REST"), ("grpc", "gRPC")):
            measure = f"one process, no quota, 64 in flight, latency 100 ms, {count:,} images over {label}"
            if transport == "grpc" and "grpc_endpoint" not in server.connection["extra"]:
                rows.append(Row(measure, "not measured: grpcio is not installed"))
                continue
            server.use(transport=transport)
            runs = repeat(options, once)
            rate, cpu_ms = statistics.median(runs["rate"]), statistics.median(runs["cpu_ms"])
            log(f"throughput over {label}: {rate:.0f} images/s, {cpu_ms:.2f} ms of CPU per image")
            result = f"{rate:.0f} images/s ({rate / 640:.2f} of 640/s; client CPU {cpu_ms:.2f} ms/image)"
            rows.append(Row(measure, result, "≥ 200 images/s", rate >= 200))
    return rows


def memory(options: Options) -> list[Row]:
    """Peak RSS of a fresh task process enriching a small and a large folder (no quota, no latency)."""
    small, large = 1000, 20_000 if options.quick else 100_000
    with emulator() as server:
        server.use()
        peaks = {
            size: repeat(options, partial(run_child, "enrich", images(size)))["peak_rss_mb"] for size in (small, large)
        }
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
            run_child("enrich", images(1000))
        exchanges = server.stats()["token_exchanges"]
    # One per process: every run here is far shorter than the refresh interval (60 min).
    measure = "IAM token exchanges: 3 runs with a new hook each in one process, and 2 more task processes"
    return [Row(measure, f"{exchanges} for 3 processes", "1 per process per refresh interval", exchanges == 3)]


#: ``--only`` names a scenario by its function's name; the table follows this order, then scenarios_more's.
SCENARIOS: dict[str, Callable[[Options], list[Row]]] = {
    **{f.__name__: f for f in (quota, throughput, memory, tokens)},
    **scenarios_more.SCENARIOS,
}
#: What ``--child NAME ARGS…`` (``harness.run_child``) runs in a fresh process.
CHILDREN: dict[str, Callable[..., None]] = {"enrich": enrich_child, **scenarios_more.CHILDREN}


# -- report -------------------------------------------------------------------------------------------
def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    model, system = models[0] if models else platform.processor(), f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({model or 'CPU unknown'}), {system}, Python {platform.python_version()}"


def report(rows: list[Row], options: Options, minutes: float) -> str:
    command = " ".join(["benchmarks/run.py", *(arg for arg in sys.argv[1:] if arg != "--write-docs")])
    kind = "Quick run (small sizes)" if options.quick else "Full run"
    runs = "one run" if options.runs == 1 else f"medians of {options.runs} runs"
    header = f"{kind}: `{command}` on {time.strftime('%Y-%m-%d')}, {minutes:.0f} min, {runs} per figure."
    lines = [f"{header} Machine: {machine()}.", "", "| measure | result | goal | met |", "| --- | --- | --- | --- |"]
    for row in rows:
        met = "—" if row.met is None else "met" if row.met else "**not met**"
        lines.append(f"| {row.measure} | {row.result} | {row.goal} | {met} |")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", str(CACHE / "airflow-home"))
    logging.getLogger("airflow_provider_searchapi").setLevel(logging.WARNING)  # no progress lines
    if args.child:
        CHILDREN[args.child[0]](*args.child[1:])
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
