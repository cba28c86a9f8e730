"""Kill a run with SIGKILL midway, re-run it: complete output, no duplicate rows, little paid twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import jsonl_rows, write_images

SCRIPT = Path(__file__).with_name("enrich_in_subprocess.py")
IMAGES = 240
CONCURRENCY = 8
#: Started but uncommitted at most: CONCURRENCY searching + two batches of the default commit size
#: (half of it), one committing and one filling.
UNCOMMITTED = CONCURRENCY + 2 * (CONCURRENCY // 2)


def _env() -> dict[str, str]:
    """The test's environment (its connections included) with the project importable."""
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _kill_midway(args: list[str], emulator) -> int:
    """Start the run, SIGKILL it once a third of the images were searched; the searches sent by then."""
    process = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while emulator.stats.snapshot()["search_requests"] < IMAGES // 3:
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return emulator.stats.snapshot()["search_requests"]


def test_sigkill_midway_then_rerun(tmp_path, searchapi_emulator, searchapi_connection, sqlite_conn_id):
    searchapi_emulator.settings.latency = 0.15  # a run of 4.5 s: killed at a third even on a loaded machine
    write_images(tmp_path / "in", IMAGES)
    args = [
        sys.executable,
        str(SCRIPT),
        f"file://{tmp_path}/in/",
        f"file://{tmp_path}/out/",
        sqlite_conn_id,
        str(CONCURRENCY),
    ]
    assert _kill_midway(args, searchapi_emulator) < IMAGES  # it really died midway

    rerun = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    with sqlite3.connect(tmp_path / "results.db") as db:
        rows = db.execute("SELECT source_uri, rank FROM found").fetchall()
    assert len({uri for uri, _ in rows}) == IMAGES  # every image has its rows
    assert len(rows) == len(set(rows))  # and none twice
    jsonl = jsonl_rows(tmp_path / "out" / "results")
    keys = [(row["source_uri"], row["rank"]) for row in jsonl]
    assert len({uri for uri, _ in keys}) == IMAGES and len(keys) == len(set(keys))
    stats = searchapi_emulator.stats.snapshot()
    assert stats["queries_answered"] == IMAGES
    assert stats["queries_answered_more_than_once"] <= UNCOMMITTED  # only what was uncommitted at the kill


def test_sigkill_midway_then_the_next_day_pays_only_for_what_was_uncommitted(
    tmp_path, searchapi_emulator, searchapi_connection, sqlite_conn_id
):
    """The re-run writes to a new daily partition: only the ledger knows what the killed run committed."""
    searchapi_emulator.settings.latency = 0.15  # a run of 4.5 s: killed at a third even on a loaded machine
    write_images(tmp_path / "in", IMAGES)
    state = f"file://{tmp_path}/out/_state/"

    def args(day: str) -> list[str]:
        return [sys.executable, str(SCRIPT), f"file://{tmp_path}/in/", f"file://{tmp_path}/out/{day}/", sqlite_conn_id]

    assert _kill_midway([*args("2026-12-01"), str(CONCURRENCY), state], searchapi_emulator) < IMAGES

    rerun = subprocess.run(
        [*args("2026-12-02"), str(CONCURRENCY), state], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stats = searchapi_emulator.stats.snapshot()
    assert stats["queries_answered"] == IMAGES
    assert stats["queries_answered_more_than_once"] <= UNCOMMITTED
    assert not list((tmp_path / "out" / "_state" / "_tmp").iterdir())  # no ledger part half-written
