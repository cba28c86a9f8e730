"""Real storage for tests: moto's S3 server on 127.0.0.1 and helpers to fill it."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the whole session, in a process of its own: the code under
    test and the emulator's threads do not wait for its requests to release the interpreter lock."""
    from tests.airflow_env import free_port  # a plugin module of its own: imported after pytest loads it

    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        assert server.poll() is None, f"moto's server exited with {server.returncode}"
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "moto's server did not answer within 60 s"
            time.sleep(0.1)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_conn_id(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``aws`` connection whose ``endpoint_url`` is moto (dummy keys: no cloud is ever asked)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_S3_TEST", json.dumps(conn))
    return "s3_test"


@pytest.fixture
def bucket(s3_conn_id: str) -> str:
    """A new empty bucket; returns ``s3://name``."""
    from airflow.sdk import ObjectStoragePath

    name = "bkt-" + secrets.token_hex(4)
    ObjectStoragePath(f"s3://{name}/", conn_id=s3_conn_id).fs.mkdir(name)
    return f"s3://{name}"
