"""A real Redis for the shared rate limit's tests: Debian's ``redis-server`` on 127.0.0.1 at a free port.

``make test`` installs it when missing (as root); elsewhere the tests that need it are skipped, and a
banner after the results says so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.airflow_env import free_port
from tests.loud_skip import banner

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MISSING = "Debian's redis-server (as root: apt-get update && apt-get install -y redis-server; `make test` does it)"
SKIP_REASON = f"LOUD SKIP: no {MISSING}"


class RedisServer:
    """``redis-server`` without persistence on 127.0.0.1; :meth:`stop` and :meth:`start` again at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def connection_json(self) -> str:
        """An Airflow ``redis`` connection to this server, as an ``AIRFLOW_CONN_*`` value."""
        return json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "extra": {"db": 0}})


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started Redis of this test's own (stopped after it); the test is skipped without redis-server."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(SKIP_REASON)
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_conn_id(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Connection ``searchapi_redis`` (type ``redis``) to the test's Redis; returns its id."""
    monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_REDIS", redis_server.connection_json())
    return "searchapi_redis"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner after the results when tests were skipped for want of redis-server."""
    banner(terminalreporter, SKIP_REASON, "SHARED RATE LIMIT TESTS", MISSING)
