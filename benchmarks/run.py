"""Benchmarks of the enrichment engine against the emulator, in separate processes over real HTTP.

    .venv/bin/python benchmarks/run.py            # full sizes (about 40 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # smaller sizes (a few minutes)

Prints one table of ratios measured side by side in the same run (medians of --runs runs), and with
--write-docs puts it into docs/benchmarks.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache"
DOCS = ROOT / "docs" / "benchmarks.md"


# -- the emulator, in its own process ---------------------------------------------------------------
class EmulatorProcess:
    """``python -m airflow_provider_searchapi.testing.emulator`` on 127.0.0.1, driven over HTTP."""

    def __init__(self, workdir: Path) -> None:
        conn_file, ready = workdir / "conn.json", workdir / "ready"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_searchapi.testing.emulator",
                "--conn-out",
                str(conn_file),
                "--ready-file",
                str(ready),
                "--grpc",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.05)
        self.url = ready.read_text()
        self.connection = json.loads(conn_file.read_text())

    def configure(self, **settings: object) -> None:
        httpx.post(f"{self.url}/_emulator/reset").raise_for_status()
        defaults = {"latency": 0.0, "quota_rps": None, "fault_rate": 0.0, "max_result_pages": 1}
        httpx.post(f"{self.url}/_emulator/settings", json={**defaults, **settings}).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_emulator/stats").json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# -- datasets ---------------------------------------------------------------------------------------
def small_images(count: int) -> Path:
    """``count`` distinct small JPEGs in folders of 1,000 (generated once, cached)."""
    folder = CACHE / f"small-{count}"
    if (folder / ".complete").exists():
        return folder
    from PIL import Image

    base = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 40)).save(base, "JPEG", quality=80)
    head, tail = base.getvalue()[:-2], base.getvalue()[-2:]
    for index in range(count):
        sub = folder / f"{index // 1000:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        # A comment segment makes each file distinct while staying a valid JPEG.
        comment = f"img-{index}".encode()
        (sub / f"{index}.jpg").write_bytes(
            head[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + head[2:] + tail
        )
    (folder / ".complete").touch()
    return folder


def sized_images(size: int, count: int) -> Path:
    """``count`` distinct JPEGs of about ``size`` bytes (noise, so that they do not compress)."""
    folder = CACHE / f"sized-{size}-{count}"
    if (folder / ".complete").exists():
        return folder
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    side = int((size / 1.6) ** 0.5)
    for index in range(count):
        noise = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        buffer = io.BytesIO()
        noise.save(buffer, "JPEG", quality=75)
        (folder / f"{index}.jpg").write_bytes(buffer.getvalue())
    (folder / ".complete").touch()
    return folder


# -- client runs --------------------------------------------------------------------------------------
def _use_connection(connection: dict, **extra: object) -> None:
    connection = {**connection, "extra": {**connection["extra"], **extra}}
    os.environ["AIRFLOW_CONN_SEARCHAPI_BENCH"] = json.dumps(connection)


def enrich(
    connection: dict, source: str, *, rps: float, concurrency: int, batch: int | None = None, transport: str = "rest"
) -> dict:
    """One engine run into a JSON Lines sink; wall time, client CPU time and the summary."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, JsonLinesSink, list_images
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    _use_connection(connection, requests_per_second=rps, transport=transport)
    with tempfile.TemporaryDirectory() as out:
        hook = SearchApiHook("searchapi_bench", max_connections=max(10, concurrency))
        enricher = Enricher(
            hook,
            [JsonLinesSink(ObjectStoragePath(f"file://{out}/"))],
            EnrichmentSettings(max_concurrency=concurrency, batch_sources=batch),
        )
        cpu, wall = time.process_time(), time.monotonic()
        summary = enricher.run(list_images(source))
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    assert summary.failed == 0, f"{summary.failed} images failed"
    return {"wall": wall, "cpu": cpu, "images": summary.searched, "requests": summary.requests}


def one_by_one(connection: dict, source: Path, count: int) -> float:
    """Images per second of the tutorial's loop: one request per image, waiting for each."""
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    _use_connection(connection, requests_per_second=1e6)
    hook = SearchApiHook("searchapi_bench")
    files = sorted(source.rglob("*.jpg"))[:count]
    started = time.monotonic()
    for path in files:
        hook.search_by_image(image=path.read_bytes())
    hook.close()
    return len(files) / (time.monotonic() - started)


def memory_child(source: str) -> None:
    """Run in a fresh process: enrich ``source`` and print the peak RSS in MB."""
    result = enrich(json.loads(os.environ["BENCH_CONNECTION"]), source, rps=1e6, concurrency=32)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**result, "peak_rss_mb": peak_mb}))


def peak_rss(emulator: EmulatorProcess, source: Path) -> dict:
    env = {**os.environ, "BENCH_CONNECTION": json.dumps(emulator.connection)}
    output = subprocess.run(
        [sys.executable, __file__, "--memory-child", f"file://{source}/**/*.jpg"],
        env=env,
        capture_output=True,
        text=True,
    )
    if output.returncode != 0:
        raise RuntimeError(output.stderr[-3000:])
    return json.loads(output.stdout.strip().splitlines()[-1])


# -- the table --------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    measured: str
    goal: str
    ok: bool


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("apache-airflow", "httpx", "uvicorn"))
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {versions}"


def run(args: argparse.Namespace) -> list[Row]:
    quick = args.quick
    sizes = {
        "quota": 300 if quick else 5000,
        "unthrottled": 1280 if quick else 5000,
        "serial": 30 if quick else 60,
        "cpu": 60 if quick else 200,
        "memory": (1000, 20_000 if quick else 100_000),
    }
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as work:
        emulator = EmulatorProcess(Path(work))
        try:
            # 1. quota-bound
            data = small_images(sizes["quota"])
            ratios, throttled = [], []
            for _ in range(args.runs):
                emulator.configure(latency=0.3, quota_rps=10, retry_after=1)
                result = enrich(emulator.connection, f"file://{data}/**/*.jpg", rps=10, concurrency=16)
                ratios.append(result["requests"] / result["wall"] / 10)
                throttled.append(emulator.stats()["responses"].get("429", 0))
            median = statistics.median(ratios)
            rows.append(
                Row(
                    f"quota-bound: {sizes['quota']:,} images, 300 ms, quota 10 rps — achieved ÷ 10",
                    f"{median:.3f}",
                    "≥ 0.97",
                    median >= 0.97,
                )
            )
            rows.append(Row("quota-bound: 429s caused by the client", str(max(throttled)), "0", max(throttled) == 0))

            # 2. unthrottled vs one by one; commits every 32 sources (the default, half of 64) or every 8
            data = small_images(sizes["unthrottled"])
            variants = {
                "default commits (32)": (None, "rest"),
                "batch_sources=8": (8, "rest"),
                "gRPC, batch_sources=8": (8, "grpc"),
            }
            rates: dict[str, list[float]] = {label: [] for label in variants}
            serial = []
            for _ in range(args.runs):
                for label, (batch, transport) in variants.items():
                    emulator.configure(latency=0.1)
                    result = enrich(
                        emulator.connection,
                        f"file://{data}/**/*.jpg",
                        rps=1e6,
                        concurrency=64,
                        batch=batch,
                        transport=transport,
                    )
                    rates[label].append(result["images"] / result["wall"])
                emulator.configure(latency=0.1)
                serial.append(one_by_one(emulator.connection, data, sizes["serial"]))
            for label in variants:
                rate = statistics.median(rates[label])
                rows.append(
                    Row(
                        f"unthrottled: {sizes['unthrottled']:,} images, 100 ms, 64 in flight, {label}"
                        " — achieved ÷ 640/s",
                        f"{rate / 640:.3f} ({rate:.0f}/s)",
                        "≥ 0.9",
                        rate / 640 >= 0.9,
                    )
                )
            speedup = statistics.median(rates["default commits (32)"]) / statistics.median(serial)
            rows.append(
                Row(
                    "unthrottled (default commits): speed-up over one request at a time",
                    f"{speedup:.1f}× ({statistics.median(serial):.1f}/s)",
                    "≥ 25×",
                    speedup >= 25,
                )
            )

            # 3. client CPU per image, over REST and gRPC
            cases = [(256 * 1024, "256 KiB", "rest"), (1024 * 1024, "1 MiB", "rest"), (1024 * 1024, "1 MiB", "grpc")]
            for size, label, transport in cases:
                data = sized_images(size, sizes["cpu"])
                per_image = []
                for _ in range(args.runs):
                    # Marginal cost: CPU for all images minus CPU for a third of them, per extra image,
                    # so that a run's fixed costs (loading the key, TLS context, threads) cancel out.
                    cpu = {}
                    for part in ("*[0-9]", "*[0-2]"):  # every file, then files named ...0 to ...2
                        emulator.configure(latency=0.0)
                        result = enrich(
                            emulator.connection,
                            f"file://{data}/{part}.jpg",
                            rps=1e6,
                            concurrency=8,
                            transport=transport,
                        )
                        cpu[part] = (result["cpu"], result["images"])
                    (all_cpu, all_images), (some_cpu, some_images) = cpu["*[0-9]"], cpu["*[0-2]"]
                    per_image.append((all_cpu - some_cpu) / (all_images - some_images) * 1000)
                median = statistics.median(per_image)
                goal = label == "1 MiB" and transport == "rest"
                rows.append(
                    Row(
                        f"client CPU per {label} image over {'gRPC' if transport == 'grpc' else 'REST'}"
                        " (read, encode, request, parse, write)",
                        f"{median:.2f} ms",
                        "≤ 2 ms" if goal else "—",
                        median <= 2.0 if goal else True,
                    )
                )

            # 4. memory
            small, large = sizes["memory"]
            emulator.configure(latency=0.0)
            low = peak_rss(emulator, small_images(small))
            emulator.configure(latency=0.0)
            high = peak_rss(emulator, small_images(large))
            growth = high["peak_rss_mb"] - low["peak_rss_mb"]
            rows.append(
                Row(
                    f"peak RSS: {small:,} vs {large:,} images from a local store",
                    f"{low['peak_rss_mb']:.0f} MB → {high['peak_rss_mb']:.0f} MB (+{growth:.0f} MB)",
                    "growth ≤ 50 MB",
                    growth <= 50,
                )
            )

            # 5. IAM
            exchanges = emulator.stats()["token_exchanges"]
            rows.append(
                Row(
                    "IAM token exchanges (last scenario's process, one refresh interval)",
                    str(exchanges),
                    "1",
                    exchanges == 1,
                )
            )
        finally:
            emulator.stop()
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| measure | result | goal | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.name} | {r.measured} | {r.goal} | {'yes' if r.ok else '**no**'} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--runs", type=int, default=3, help="runs per measure; medians are quoted")
    parser.add_argument("--write-docs", action="store_true", help="put the table into docs/benchmarks.md")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", str(CACHE / "airflow-home"))
    if args.memory_child:
        memory_child(args.memory_child)
        return
    started = time.monotonic()
    rows = run(args)
    header = (
        f"Measured {time.strftime('%Y-%m-%d')} with `benchmarks/run.py{' --quick' if args.quick else ''} "
        f"--runs {args.runs}` in {(time.monotonic() - started) / 60:.0f} min on {machine()}."
    )
    text = f"{header}\n\n{table(rows)}\n"
    print(text)
    if args.write_docs:
        doc = DOCS.read_text()
        start, end = doc.index("<!-- results -->"), doc.index("<!-- /results -->")
        DOCS.write_text(doc[: start + len("<!-- results -->")] + "\n" + text + doc[end:])


if __name__ == "__main__":
    main()
