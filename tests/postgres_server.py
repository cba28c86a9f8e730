"""A real PostgreSQL for the SQL output's tests: Debian's PostgreSQL (the newest installed) on 127.0.0.1
at a free port.

One throwaway cluster per test session (per xdist worker), started on first use; each test gets a
database of its own. ``make test`` installs PostgreSQL when missing (as root); elsewhere the tests
that need it are skipped, and a banner after the results says so.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.airflow_env import free_port
from tests.loud_skip import banner

#: The newest PostgreSQL's programs Debian installed (15 on Debian 12, 17 on Debian 13).
BIN = max(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(path.split("/")[-2]), default="")
MISSING = "Debian's PostgreSQL (as root: apt-get update && apt-get install -y postgresql; `make test` does it)"
SKIP_REASON = f"LOUD SKIP: no {MISSING}"


class PostgresServer:
    """A fresh cluster in a temporary folder, listening on 127.0.0.1 only (its unix socket in that
    folder), without durability (fsync off): its data lives as long as the session."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="searchapi-tests-postgres-")
        # initdb and postgres refuse to run as root: run them as the postgres user, who owns the folder.
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.folder, self.user, self.user)
        self.process: subprocess.Popen[bytes] | None = None

    def _as_user(self) -> dict[str, object]:
        return {"user": self.user, "group": self.user, "extra_groups": []} if self.user else {}

    def start(self) -> PostgresServer:
        import psycopg2

        data = os.path.join(self.folder, "data")
        initdb = [f"{BIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "-N"]
        subprocess.run(initdb, check=True, capture_output=True, **self._as_user())
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": self.folder,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        command = [f"{BIN}/postgres", "-D", data, *(f"--{key}={value}" for key, value in settings.items())]
        with open(os.path.join(self.folder, "postgres.log"), "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, **self._as_user())
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres").close()
                return self
            except psycopg2.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    with open(os.path.join(self.folder, "postgres.log")) as log:
                        said = log.read()[-2000:]
                    raise RuntimeError(f"postgres did not start on port {self.port}: {said}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: ends the sessions left open
            self.process.wait(timeout=30)
            self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        import psycopg2

        name = f"test_{secrets.token_hex(4)}"
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return name

    def connection_json(self, database: str) -> str:
        """An Airflow ``postgres`` connection to ``database``, as an ``AIRFLOW_CONN_*`` value."""
        return json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": self.port, "login": "postgres", "schema": database}
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL, stopped at its end; ask for ``postgres_conn_id``, which skips without it."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_conn_id(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Connection ``results_pg`` (type ``postgres``) to a new database of this test's own; returns its id.
    The test is skipped without PostgreSQL."""
    if not os.access(f"{BIN}/postgres", os.X_OK):
        pytest.skip(SKIP_REASON)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    monkeypatch.setenv("AIRFLOW_CONN_RESULTS_PG", server.connection_json(server.create_database()))
    return "results_pg"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner after the results when tests were skipped for want of PostgreSQL."""
    banner(terminalreporter, SKIP_REASON, "POSTGRESQL TESTS", MISSING)
