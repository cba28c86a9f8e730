"""`make demo`: run the example DAG `searchapi_enrich_bucket` end to end, offline.

Starts the IAM + Search API emulator on 127.0.0.1, prepares a private AIRFLOW_HOME on SQLite, runs
`airflow dags test` on the bundled sample images, and prints where the results are.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
HOME = DEMO / "airflow-home"
RESULTS = DEMO / "results"
DATABASE = DEMO / "results.db"
DAG_ID = "searchapi_enrich_bucket"


def airflow(*args: str, env: dict[str, str], quiet: bool = False) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    result = subprocess.run(command, env=env, text=True, capture_output=quiet)
    if result.returncode != 0:
        if quiet:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"`airflow {' '.join(args)}` failed with exit code {result.returncode}")
    return result


def main() -> int:
    from airflow_provider_searchapi.testing import Emulator

    HOME.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(RESULTS, ignore_errors=True)
    DATABASE.unlink(missing_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SEARCHAPI_RESULTS_DB": json.dumps({"conn_type": "sqlite", "host": str(DATABASE)}),
    }
    if not (HOME / "airflow.db").exists():
        print("Preparing the Airflow metadata database (SQLite, first run only)…", flush=True)
        airflow("db", "migrate", env=env, quiet=True)

    with Emulator().start() as emulator:
        env["AIRFLOW_CONN_SEARCHAPI_DEFAULT"] = emulator.connection_json(credential="authorized_key")
        print(f"IAM + Search API emulator on {emulator.url}", flush=True)
        conf = {"output_path": f"file://{RESULTS}/"}
        airflow("dags", "test", DAG_ID, "-c", json.dumps(conf), env=env)
        stats = emulator.stats.snapshot()

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
        f"Searched {sources} images: {rows} result rows, {failed} errors; "
        f"{stats['search_requests']} API calls, {stats['token_exchanges']} IAM token exchange(s)."
    )
    for source_uri, rank, url, width, height, host in sample:
        print(f"  {Path(source_uri).name:<12} #{rank} {url} ({width}x{height}, {host})")
    print("Results:")
    print(f"  SQLite:      {DATABASE}  (tables image_search_results, image_search_results_errors)")
    print(f"  JSON Lines:  {RESULTS}/")
    for part in parts:
        print(f"               {part}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
