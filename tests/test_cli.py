"""The debugging CLI, run as a real subprocess against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import make_jpeg


@pytest.fixture
def cli(searchapi_emulator, tmp_path):
    """Run ``python -m airflow_provider_searchapi ARGS`` with a connection of the given credential."""

    def run(*args: str, credential: str = "api_key", **extras: str) -> subprocess.CompletedProcess[str]:
        conn = searchapi_emulator.connection_extras(credential=credential)
        conn.update(extras)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp_path / "home"),
            "AIRFLOW_CONN_SEARCHAPI_DEFAULT": json.dumps({"conn_type": "yandex_searchapi", "extra": conn}),
        }
        env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)  # a user's shell, not our test set-up
        result = subprocess.run(
            [sys.executable, "-m", "airflow_provider_searchapi", *args], env=env, capture_output=True, text=True
        )
        run.secrets = [conn[name] for name in ("api_key", "iam_token") if name in conn]  # type: ignore[attr-defined]
        return result

    return run


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(make_jpeg(5))
    return path


def test_search_prints_a_table(cli, image_file, searchapi_emulator):
    result = cli("search", str(image_file), "--pages", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(("10 images found in 1 page(s)", "20 images found in 2 page(s)"))
    assert lines[1].split() == ["page", "#", "size", "host", "url"]
    assert all(line.split()[4].startswith("https://") for line in lines[2:])
    assert searchapi_emulator.stats.snapshot()["uploads"] == 1


def test_search_json_and_urls(cli, searchapi_emulator):
    result = cli("search", "https://example.com/cat.jpg", "--json")
    assert result.returncode == 0, result.stderr
    (page,) = json.loads(result.stdout)
    assert page["cbir_id"] and len(page["images"]) == 10 and page["images"][0]["url"].startswith("https://")
    assert searchapi_emulator.stats.snapshot()["uploads"] == 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["search", "/nonexistent/cat.jpg"], "no such file"),
        (["search", "{text}"], "not a JPEG"),
        (["search", "{image}", "--pages", "0"], "--pages must be >= 1"),
        (["search", "{image}", "--conn-id", "missing"], "isn't defined"),
    ],
)
def test_bad_input_exits_2(cli, image_file, tmp_path, args, words):
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    args = [a.format(text=text, image=image_file) for a in args]
    result = cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr


def test_bad_connection_settings_exit_2_without_the_secret(cli):
    result = cli("check-connection", credential="metadata", service_account_json="{broken")
    assert result.returncode == 2
    assert "service_account_json" in result.stderr and "not valid JSON" in result.stderr
    assert all(secret not in result.stdout + result.stderr for secret in cli.secrets)


def test_api_errors_exit_1(cli, image_file):
    result = cli("search", str(image_file), folder_id="b1gnotyours")
    assert result.returncode == 1
    assert "Search API error 403" in result.stderr


@pytest.mark.parametrize("credential", ["api_key", "iam_token", "authorized_key"])
def test_check_connection(cli, credential):
    ok = cli("check-connection", credential=credential)
    assert ok.returncode == 0 and ok.stdout.startswith(f"Connected: {credential} credential accepted")
    refused = cli("check-connection", credential=credential, folder_id="b1gnotyours")
    assert refused.returncode == 1 and "403" in refused.stdout and "folder_id" in refused.stdout
    for result in (ok, refused):
        assert all(secret not in result.stdout + result.stderr for secret in cli.secrets)
        assert "PRIVATE KEY" not in result.stdout + result.stderr
