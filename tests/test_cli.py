"""``python -m airflow_provider_searchapi``, run as a real subprocess against the emulator.

Each test starts its own emulator on 127.0.0.1 and hands the connection to the CLI the way a user's
shell would: ``AIRFLOW_CONN_<ID>`` holding the JSON ``Emulator.connection_json()`` writes. Every run
is checked for leaked secrets (API key, private key, any IAM token), whatever its outcome.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_searchapi.testing.emulator import Emulator
from airflow_provider_searchapi.testing.keys import generate_authorized_key
from tests.conftest import make_jpeg

#: Every IAM token the emulator mints starts so; none may ever be printed.
TOKEN_PREFIX = "t1.emu."


@dataclass
class Run:
    """One finished CLI run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator().start() as started:
        yield started


@pytest.fixture
def cli(tmp_path: Path):
    """``cli(*args, conn=<AIRFLOW_CONN_ value>, conn_id=...)`` runs the CLI and checks it leaked nothing."""

    def run(*args: str, conn: str, conn_id: str = "searchapi_default") -> Run:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
            f"AIRFLOW_CONN_{conn_id.upper()}": conn,
        }
        env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)  # a user's shell, not our test set-up
        done = subprocess.run(
            [sys.executable, "-m", "airflow_provider_searchapi", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        result = Run(done.returncode, done.stdout, done.stderr)
        _assert_no_secret(result.output, json.loads(conn)["extra"])
        return result

    return run


def _assert_no_secret(output: str, extras: dict[str, Any]) -> None:
    """Neither the API key, the IAM token, the private key (or any line of it) nor a minted token shows."""
    assert TOKEN_PREFIX not in output
    assert "PRIVATE KEY" not in output
    for name in ("api_key", "iam_token"):
        if extras.get(name):
            assert extras[name] not in output, f"{name} leaked"
    try:
        pem = json.loads(extras.get("service_account_json") or "{}").get("private_key", "")
    except ValueError:  # a test's deliberately broken key
        pem = ""
    for line in pem.splitlines():
        if len(line) > 20 and "-----" not in line and "Yandex.Cloud" not in line:
            assert line not in output, "a line of the private key leaked"


def _with(conn: str, **changes: Any) -> str:
    """The connection JSON with some extras changed (``None`` removes one)."""
    data = json.loads(conn)
    for name, value in changes.items():
        if value is None:
            data["extra"].pop(name, None)
        else:
            data["extra"][name] = value
    return json.dumps(data)


def _image_with_pages(tmp_path: Path, pages: int) -> Path:
    """A JPEG for which the emulator has exactly ``pages`` result pages (its default max is 3).

    The emulator derives the page count from the image's hash: ``1 + sha256[0] % max_result_pages``.
    """
    for seed in range(1000):
        data = make_jpeg(seed)
        if 1 + hashlib.sha256(data).digest()[0] % 3 == pages:
            path = tmp_path / f"photo-{seed}.jpg"
            path.write_bytes(data)
            return path
    raise AssertionError("no such image in 1000 seeds")


# -- output -----------------------------------------------------------------------------------
def test_search_prints_a_table(cli, emulator, tmp_path):
    image = _image_with_pages(tmp_path, 3)
    result = cli("search", str(image), "--pages", "2", conn=emulator.connection_json(credential="api_key"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("20 images found in 2 page(s); CBIR id ")
    assert lines[1].split() == ["page", "#", "size", "host", "url"]
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 20
    assert [row[0] for row in rows] == ["0"] * 10 + ["1"] * 10
    assert [row[1] for row in rows] == [str(n) for n in range(20)]
    assert all("x" in row[2] and row[4].startswith(f"{emulator.url}/img/") for row in rows)
    stats = emulator.stats.snapshot()
    assert stats["uploads"] == 1 and stats["search_requests"] == 2  # page 1 by CBIR id, no re-upload


def test_pages_stop_at_the_last_page_and_json(cli, emulator, tmp_path):
    image = _image_with_pages(tmp_path, 3)
    result = cli("search", str(image), "--pages", "5", "--json", conn=emulator.connection_json(credential="api_key"))
    assert result.returncode == 0, result.stderr
    pages = json.loads(result.stdout)
    assert [page["page"] for page in pages] == [0, 1, 2]
    assert len({page["cbir_id"] for page in pages}) == 1
    assert all(len(page["images"]) == 10 for page in pages)
    first = pages[0]["images"][0]
    assert first["url"].startswith(f"{emulator.url}/img/") and isinstance(first["width"], int) and first["host"]
    assert emulator.stats.snapshot()["search_requests"] == 4  # the 4th page came back empty: stop


def test_a_url_is_sent_as_is_with_another_conn_id(cli, emulator):
    conn = emulator.connection_json(credential="authorized_key")
    result = cli(
        "search", "https://example.com/cat.jpg", "--json", "--conn-id", "my_search", conn=conn, conn_id="my_search"
    )
    assert result.returncode == 0, result.stderr
    (page,) = json.loads(result.stdout)
    assert page["page"] == 0 and page["cbir_id"] and len(page["images"]) == 10
    stats = emulator.stats.snapshot()
    assert stats["uploads"] == 0 and stats["token_exchanges"] == 1


@pytest.mark.parametrize("credential", ["api_key", "iam_token", "authorized_key"])
def test_check_connection_ok(cli, emulator, credential):
    result = cli("check-connection", conn=emulator.connection_json(credential=credential))
    assert result.returncode == 0, result.output
    assert result.stdout.startswith(f"Connected: {credential} credential accepted for folder {emulator.folder_id}")


@pytest.mark.parametrize("command", [["check-connection"], ["search", "https://example.com/cat.jpg"]])
def test_a_yandexcloud_connection_without_folder_takes_folder_id(cli, emulator, command):
    """The managed Airflow's ``yandexcloud_default`` may name no folder: the hook takes one, so must the CLI."""
    extras = emulator.connection_extras(credential="oauth", conn_type="yandexcloud")
    del extras["folder_id"]
    conn = json.dumps({"conn_type": "yandexcloud", "extra": extras})
    args = [*command, "--conn-id", "yandexcloud_default", "--folder-id", emulator.folder_id]
    result = cli(*args, conn=conn, conn_id="yandexcloud_default")
    assert result.returncode == 0, result.output
    assert emulator.stats.snapshot()["search_requests"] == 1


# -- exit code 2: bad input ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["search", "{missing}"], "{missing}: no such file"),
        (["search", "{text}"], "{text}"),  # names the file at fault
        (["search", "{text}"], "not a JPEG"),
        (["search", "{folder}"], "cannot be read"),
        (["search", "{image}", "--pages", "0"], "argument --pages: must be >= 1"),
        (["search", "https://example.com/" + "a" * 1100], "url must be 1 to 1024 characters"),
        (["search", "{image}", "--conn-id", "nowhere"], "nowhere"),
        (["check-connection", "--conn-id", "nowhere"], "isn't defined"),
    ],
)
def test_bad_input_exits_2(cli, emulator, tmp_path, args, words):
    names = {
        "missing": str(tmp_path / "missing.jpg"),
        "text": str(tmp_path / "notes.jpg"),
        "folder": str(tmp_path),
        "image": str(_image_with_pages(tmp_path, 1)),
    }
    Path(names["text"]).write_text("hello, not an image")
    result = cli(*[arg.format(**names) for arg in args], conn=emulator.connection_json(credential="api_key"))
    assert result.returncode == 2, result.output
    assert words.format(**names) in result.stderr
    assert emulator.stats.snapshot()["search_requests"] == 0


@pytest.mark.parametrize(
    "command, changes, words",
    [
        ("check-connection", {"service_account_json": "{broken"}, ["'service_account_json'", "not valid JSON"]),
        ("search", {"service_account_json": "{broken"}, ["'service_account_json'", "not valid JSON"]),
        ("check-connection", {"api_key": "AQVN-second-credential"}, ["give only one credential"]),
        ("search", {"folder_id": None}, ["'folder_id'", "has none", "folder_id="]),
        ("check-connection", {"endpoint": "searchapi.example"}, ["'endpoint'", "http"]),
        (
            "check-connection",
            {"service_account_json": None, "service_account_json_path": "/nonexistent/key.json"},
            ["'service_account_json_path'", "/nonexistent/key.json"],
        ),
    ],
)
def test_bad_connection_settings_exit_2(cli, emulator, command, changes, words):
    conn = _with(emulator.connection_json(credential="authorized_key"), **changes)
    args = ["search", "https://example.com/cat.jpg"] if command == "search" else [command]
    result = cli(*args, conn=conn)
    assert result.returncode == 2, result.output
    assert all(word in result.stderr for word in words), result.stderr
    assert emulator.stats.snapshot()["search_requests"] == 0


# -- exit code 1: the API or IAM said no -------------------------------------------------------
#: Stands for an authorized key the emulator has never seen (made in the test, not at collection).
UNKNOWN_KEY = "<a key IAM does not know>"


@pytest.mark.parametrize(
    "command, credential, changes, words",
    [
        ("search", "api_key", {"folder_id": "b1gnotyours"}, ["403", "folder_id"]),
        ("check-connection", "api_key", {"folder_id": "b1gnotyours"}, ["403", "folder_id"]),
        ("check-connection", "api_key", {"api_key": "AQVN-revoked-or-mistyped-key"}, ["401", "credential was refused"]),
        ("search", "iam_token", {"iam_token": "t1.expired.0123456789"}, ["401", "credential was refused"]),
        ("search", "authorized_key", {"service_account_json": UNKNOWN_KEY}, ["IAM", "401"]),
        ("check-connection", "authorized_key", {"service_account_json": UNKNOWN_KEY}, ["IAM", "401"]),
    ],
)
def test_api_errors_exit_1(cli, emulator, tmp_path, command, credential, changes, words):
    if changes.get("service_account_json") == UNKNOWN_KEY:
        changes = {"service_account_json": json.dumps(generate_authorized_key())}  # never registered
    conn = _with(emulator.connection_json(credential=credential), **changes)
    args = ["search", str(_image_with_pages(tmp_path, 1))] if command == "search" else ["check-connection"]
    result = cli(*args, conn=conn)
    assert result.returncode == 1, result.output
    assert result.stdout == ""  # only results go to stdout
    (line,) = result.stderr.splitlines()  # one line, whatever failed
    assert line.startswith("error: ") and all(word in line for word in words), line


def test_an_unreachable_iam_endpoint_is_one_line_naming_it(cli, emulator, tmp_path):
    conn = _with(emulator.connection_json(credential="authorized_key"), iam_endpoint="http://127.0.0.1:9/iam/v1/tokens")
    result = cli("search", "https://example.com/cat.jpg", conn=conn)
    assert result.returncode == 1, result.output
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [line for line in result.stderr.splitlines() if not line.startswith("WARNING: ")]
    (line,) = errors
    assert "could not reach the IAM endpoint http://127.0.0.1:9/iam/v1/tokens" in line
    assert "Traceback" not in result.stderr


def test_json_always_parses_under_injected_faults(cli, emulator, tmp_path):
    """Retry warnings go to stderr: stdout stays one JSON document, fault or not."""
    emulator.settings.update({"fault_rate": 0.3, "fault_kinds": ["503", "429", "500"], "retry_after": 0.01})
    conn = emulator.connection_json(credential="api_key")
    warned = 0
    for seed in (1, 3, 5):  # faults are drawn per image and page, alike on every run: one on each first page
        image = tmp_path / f"{seed}.jpg"
        image.write_bytes(make_jpeg(seed))
        result = cli("search", str(image), "--pages", "2", "--json", conn=conn)
        if result.returncode == 0:
            assert isinstance(json.loads(result.stdout), list)
        else:  # every attempt failed: no JSON at all, one error line
            assert result.returncode == 1 and result.stdout == "" and "error: " in result.stderr
        warned += result.stderr.count("retrying in")
    assert sum(emulator.stats.snapshot()["faults"].values()) == warned == 3  # each retried once, with a warning


def test_input_mistakes_are_reported_before_airflow_is_imported(tmp_path):
    """A missing file fails at once: the CLI checks it before importing Airflow (which takes seconds)."""
    code = (
        "import sys; from airflow_provider_searchapi.cli import main; rc = main(sys.argv[1:]); "
        "assert 'airflow.sdk' not in sys.modules and 'airflow.providers.common.compat' not in sys.modules; "
        "sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "search", str(tmp_path / "missing.jpg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {tmp_path / 'missing.jpg'}: no such file"
