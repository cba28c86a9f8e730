"""``python -m airflow_provider_searchapi`` in a shell, against the emulator.

Standard output must hold the command's result alone, whatever Airflow logs (3.0 and 3.1 log there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_provider_searchapi.testing.samples import SAMPLE_DIR


def _cli(tmp_path, conn_json: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW_CONN_SEARCHAPI_DEFAULT": conn_json}
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)  # a user's shell
    command = [sys.executable, "-m", "airflow_provider_searchapi", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("credential", ["authorized_key", "api_key"])
def test_check_connection_connects(tmp_path, searchapi_emulator, credential):
    done = _cli(tmp_path, searchapi_emulator.connection_json(credential=credential), "check-connection")
    assert done.returncode == 0, done.stdout + done.stderr
    expected = f"Connected: {credential} credential accepted for folder {searchapi_emulator.folder_id}; a test search"
    assert done.stdout.startswith(expected) and done.stdout.count("\n") == 1, done.stdout
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 1


def test_check_connection_names_a_missing_connection(tmp_path, searchapi_emulator):
    done = _cli(
        tmp_path, searchapi_emulator.connection_json(credential="api_key"), "check-connection", "--conn-id", "nowhere"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nowhere" in done.stderr and done.stdout == ""


def test_search_json_output_is_json(tmp_path, searchapi_emulator):
    image = str(SAMPLE_DIR / "sunset.jpg")
    done = _cli(
        tmp_path, searchapi_emulator.connection_json(credential="api_key"), "search", image, "--pages", "2", "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pages = json.loads(done.stdout)
    assert [page["page"] for page in pages] == [0, 1]
    assert len(pages[0]["images"]) == searchapi_emulator.settings.images_per_page
