"""Real storage for tests: moto's S3 server on 127.0.0.1 and helpers to fill it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server, on 127.0.0.1, for the whole session."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


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
