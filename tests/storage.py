"""Real storage for tests: moto's S3 server on 127.0.0.1 and helpers to fill it."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

#: moto's S3 server in a child process: it prints its port, and stops when its stdin closes (at the
#: session's end, or when the test process dies).
_MOTO_SERVER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the whole session, in a process of its own: the code under
    test and the emulator's threads do not wait for its requests to release the interpreter lock."""
    command = [sys.executable, "-c", _MOTO_SERVER]
    server = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    port = server.stdout.readline().strip()
    assert port.isdigit(), f"moto's server did not start (exit status {server.poll()})"
    yield f"http://127.0.0.1:{port}"
    server.stdin.close()
    server.wait(timeout=30)


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
