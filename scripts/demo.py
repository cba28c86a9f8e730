"""`make demo`: run the example DAG `searchapi_enrich_bucket` end to end, offline.

Starts the IAM + Search API emulator on 127.0.0.1, prepares a private AIRFLOW_HOME on SQLite, runs
`airflow dags test` on the bundled sample images, and prints the run's progress and where the results
are; Airflow's own log goes to `.demo/demo.log`. Results are kept between runs, so a second run shows
resume (nothing searched again); `make demo-clean` removes them. It then writes the HTML report of the
results, `.demo/report.html`, whose found images the emulator serves: in a terminal, it keeps serving
them until Enter is pressed.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
HOME = DEMO / "airflow-home"
RESULTS = DEMO / "results"
DATABASE = DEMO / "results.db"
LOG = DEMO / "demo.log"
REPORT = DEMO / "report.html"
#: The emulator's port, the same on every run: the found images in the kept results point at it.
EMULATOR_PORT = 47312
DAG_ID = "searchapi_enrich_bucket"
#: Lines of the task's log worth showing: the engine's progress and the operator's summary.
SHOWN = re.compile(
    r"^\S+Z \[(info|warning|error)\s*\] (Progress:|Finished:|Searched \d+ images|Resuming:|Stopped:)|\[error"
)
#: structlog's prefix (time, level) and suffix (logger, source location) around a message.
DECORATION = re.compile(r"^\S+Z \[\w+\s*\] |\s+\[[\w.]+\]( loc=\S+)?$|\s+loc=\S+$")


def airflow(*args: str, env: dict[str, str]) -> None:
    """Run an ``airflow`` command, its output appended to the log; show only the lines that matter."""
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    with LOG.open("a") as log:
        log.write(f"$ airflow {' '.join(args)}\n")
        process = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if args[0] == "dags" and SHOWN.search(line):
                print("  " + DECORATION.sub("", line.rstrip()), flush=True)
            elif args[0] == "dags" and "DagRun Finished" in line:
                print("  DAG run finished: " + re.sub(r".*(state=\w+).*", r"\1", line.rstrip()), flush=True)
    if process.wait() != 0:
        sys.stderr.write("".join(LOG.read_text().splitlines(keepends=True)[-40:]))
        raise SystemExit(f"`airflow {' '.join(args)}` failed with exit code {process.returncode}; log: {LOG}")


def main() -> int:
    from airflow_provider_searchapi.testing import Emulator

    HOME.mkdir(parents=True, exist_ok=True)
    LOG.write_text("")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SEARCHAPI_RESULTS_DB": json.dumps({"conn_type": "sqlite", "host": str(DATABASE)}),
    }
    if not (HOME / "airflow.db").exists():
        print("Preparing the Airflow metadata database (SQLite, first run only)…", flush=True)
        airflow("db", "migrate", env=env)

    try:
        emulator = Emulator().start(port=EMULATOR_PORT)
    except OSError:
        print(f"Port {EMULATOR_PORT} is taken: the report will not show the pictures found by earlier runs")
        emulator = Emulator().start()
    with emulator:
        env["AIRFLOW_CONN_SEARCHAPI_DEFAULT"] = emulator.connection_json(credential="authorized_key")
        print(f"IAM + Search API emulator on {emulator.url}; running the DAG {DAG_ID} (Airflow's log: {LOG})")
        conf = {"output_path": f"file://{RESULTS}/"}
        airflow("dags", "test", DAG_ID, "-c", json.dumps(conf), env=env)
        summarize(emulator.stats.snapshot())
        if sys.stdin.isatty():
            input("\nOpen the report in a browser now: its pictures are served until you press Enter. ")
    return 0


def summarize(stats: dict[str, Any]) -> None:
    """Print what the results hold, where they are, and write and name the HTML report."""
    from airflow_provider_searchapi.report import report_from_output

    with sqlite3.connect(DATABASE) as db:
        rows, sources = db.execute("SELECT COUNT(*), COUNT(DISTINCT source_uri) FROM image_search_results").fetchone()
        failed = db.execute("SELECT COUNT(*) FROM image_search_results_errors").fetchone()[0]
        sample = db.execute(
            "SELECT source_uri, rank, url, width, height, host FROM image_search_results"
            " ORDER BY source_uri, rank LIMIT 3"
        ).fetchall()
    parts = sorted(p.relative_to(RESULTS) for p in RESULTS.rglob("*.json*"))
    print()
    print(
        f"This run: {stats['search_requests']} API calls, {stats['token_exchanges']} IAM token exchange(s). "
        f"In the results: {sources} images, {rows} result rows, {failed} errors."
    )
    for source_uri, rank, url, width, height, host in sample:
        print(f"  {Path(source_uri).name:<12} #{rank} {url} ({width}x{height}, {host})")
    print("Results:")
    print(f"  SQLite:      {DATABASE}  (tables image_search_results, image_search_results_errors)")
    print(f"  JSON Lines:  {RESULTS}/")
    for part in parts:
        print(f"               {part}")
    latest = max(RESULTS.glob("*/_manifest/*.json"), key=lambda manifest: manifest.stat().st_mtime)
    report_from_output(str(latest.parent.parent), str(REPORT))  # every run's results in that output folder
    print(f"  Report:      {REPORT}")
    print("Run `make demo` again to see resume (nothing is searched twice); `make demo-clean` starts over.")


if __name__ == "__main__":
    sys.exit(main())
