"""A real Airflow home (SQLite, migrated once per session) for running the example DAGs as users do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
AIRFLOW_VERSION = Version(version("apache-airflow")).release


def free_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    """Environment of an Airflow home whose dags folder is ``dags_examples/``."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    if AIRFLOW_VERSION < (3, 1):
        # Airflow 3.0's `dags test` fails a task whose Asset outlets are not active, and only the DAG
        # processor activates them: put the DAGs in the database once, as it would.
        command = [AIRFLOW, "dags", "reserialize"]
        reserialize = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert reserialize.returncode == 0, reserialize.stderr[-3000:]
    return env


def connections_env() -> dict[str, str]:
    """The connections and AWS settings the current test put in the environment."""
    return {key: value for key, value in os.environ.items() if key.startswith(("AIRFLOW_CONN_", "AWS_"))}


def dags_test(
    env: dict[str, str], dag_id: str, conf: dict | None = None, logical_date: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``airflow dags test DAG_ID [LOGICAL_DATE]`` that must succeed; returns the finished process (output captured)."""
    command = [AIRFLOW, "dags", "test", dag_id, *([logical_date] if logical_date else [])]
    command += ["-c", json.dumps(conf)] if conf else []
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "state=success" in result.stdout + result.stderr
    return result
