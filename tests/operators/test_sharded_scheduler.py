"""The sharded example DAG run by a real ``airflow scheduler`` (LocalExecutor, parallelism 4): four
mapped shards in four task processes share one Redis rate limit against the emulator's 10/s quota.

api-server, dag-processor and scheduler run on 127.0.0.1 with a fresh SQLite home; the run is
triggered and watched through the REST API, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.airflow_env import AIRFLOW, ROOT, free_port
from tests.conftest import max_in_window, write_images

pytestmark = pytest.mark.serial  # measures time or rates: `make test` runs it alone

QUOTA, SHARDS, IMAGES = 10.0, 4, 120


@pytest.fixture
def airflow_cluster(tmp_path, searchapi_connection, redis_conn_id) -> Iterator[httpx.Client]:
    """api-server, dag-processor and scheduler (LocalExecutor, parallelism 4); yields an API client."""
    home, port = tmp_path / "airflow-home", free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": "searchapi-test-jwt-secret",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    home.mkdir()
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    commands = {
        "api-server": [AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port)],
        "dag-processor": [AIRFLOW, "dag-processor"],
        "scheduler": [AIRFLOW, "scheduler"],
    }
    processes = {}
    try:
        for name, command in commands.items():
            log = open(home / f"{name}.log", "w")  # noqa: SIM115 - closed with the process below
            processes[name] = (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200, 120, home)
        token = httpx.get(f"{url}/auth/token", timeout=10).json()["access_token"]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            yield api
    finally:
        for process, _ in processes.values():
            process.terminate()
        for process, log in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _wait(ready, timeout: float, home: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(home.glob("*.log")))
            pytest.fail(f"not ready within {timeout:.0f} s\n{logs}")
        time.sleep(0.5)


def test_four_shards_in_four_processes_share_the_quota_through_redis(
    airflow_cluster, searchapi_emulator, redis_conn_id, tmp_path
):
    api, dag = airflow_cluster, "searchapi_enrich_sharded"
    searchapi_emulator.settings.update({"quota_rps": QUOTA, "latency": 0.3})
    write_images(tmp_path / "images", IMAGES)
    conf = {
        "source": f"file://{tmp_path}/images/",
        "output_path": f"file://{tmp_path}/out/",
        "rate_limit_conn_id": redis_conn_id,
    }
    home = tmp_path / "airflow-home"
    _wait(lambda: api.get(f"/api/v2/dags/{dag}").status_code == 200, 180, home)  # parsed
    # Only this DAG runs: the other examples stay paused (a scheduled one would compete for SQLite's lock).
    assert api.patch(f"/api/v2/dags/{dag}", json={"is_paused": False}).status_code == 200
    run = api.post(f"/api/v2/dags/{dag}/dagRuns", json={"logical_date": None, "conf": conf})
    assert run.status_code == 200, run.text
    run_id = run.json()["dag_run_id"]
    _wait(lambda: api.get(f"/api/v2/dags/{dag}/dagRuns/{run_id}").json()["state"] in ("success", "failed"), 300, home)
    assert api.get(f"/api/v2/dags/{dag}/dagRuns/{run_id}").json()["state"] == "success"

    shards = api.get(f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances/enrich_shard/listMapped").json()
    spans = [(ti["start_date"], ti["end_date"]) for ti in shards["task_instances"]]
    assert len(spans) == SHARDS
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four ran at once
    rows = [json.loads(line) for part in (tmp_path / "out" / "results").glob("*.jsonl") for line in part.open()]
    assert len({row["source_uri"] for row in rows}) == IMAGES
    stats = searchapi_emulator.stats.snapshot()
    assert stats["responses"] == {"200": IMAGES}  # four processes at 10/s each, and not one 429
    # Starts leave the four processes 100 ms apart; with six Airflow processes on two cores a request
    # can reach the server late, next to the following one (12 seen for 10); unshared it would be 40.
    assert max_in_window(list(searchapi_emulator.stats.arrivals)) <= QUOTA + 3
