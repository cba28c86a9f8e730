"""The connection form of Airflow's real UI, driven in Debian's headless Chromium.

Starts ``airflow api-server`` on 127.0.0.1 (fresh ``AIRFLOW_HOME``, SQLite, simple auth manager with
every user admin, *Test connection* enabled) and the emulator on 127.0.0.1. Through the UI: adds a
``yandex_searchapi`` connection, fills the provider's fields, saves it, presses *Test* and reads the
message; edits it without retyping the secret. Through the REST API: the secrets are stored whole and
shown masked. Selectors come from the DOM of the running Airflow 3.3 and 3.1 UIs, which agree on
what is used here (the extra fields are ``#element_<name>``; their ``<label>``s are not linked to the
inputs, so ``get_by_label`` cannot be used for them). Runs on Airflow 3.3 in ``make test`` and on
3.1 in the ``compat(3.1)`` session of ``make test-matrix``.

``SEARCHAPI_UPDATE_SCREENSHOTS=1`` refreshes ``docs/img/connection-form.png`` from the filled form
(off by default: the emulator's port changes on every run). Skipped, loudly, without Chromium or
Playwright; ``make test`` installs Chromium when it may.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_searchapi.testing.emulator import Emulator
from airflow_provider_searchapi.testing.keys import generate_authorized_key
from tests.airflow_env import AIRFLOW, AIRFLOW_VERSION, ROOT, free_port
from tests.e2e.conftest import BROWSER_TESTS

SCREENSHOT = ROOT / "docs" / "img" / "connection-form.png"
#: Airflow 3.1's form draws every extra field as a text input: it ignores the ``password`` format the
#: API declares for the secrets (only the standard Password field is drawn as one). They are stored
#: whole and shown masked all the same.
SECRETS_AS_PASSWORD_INPUTS = AIRFLOW_VERSION >= (3, 2)
#: What Airflow 3.3.2's API answers when its own connections list tests a connection stored without a
#: port: the list posts ``port: 0`` (``Number(null)``), which differs from the stored NULL.
#: Fixed upstream by apache/airflow#73298 (the API treats port 0 as blank).
PORT_ZERO_BUG = "The host or port to test differs from the stored connection"

pytestmark = BROWSER_TESTS


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """``airflow api-server`` on 127.0.0.1 with a fresh SQLite metadata database.

    Yields ``url``, ``env`` (for ``airflow`` commands on the same home) and ``api`` (an httpx client
    holding a token of the simple auth manager).
    """
    home = tmp_path_factory.mktemp("airflow-ui-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = home / "api-server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_healthy(server, url, log_path)
            # All-admins mode hands a token to anyone who asks (GET /auth/token).
            token = httpx.get(f"{url}/auth/token", timeout=10).json()["access_token"]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
                yield {"url": url, "env": env, "api": api}
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_healthy(server: subprocess.Popen, url: str, log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, "api-server exited:\n" + log_path.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, (
            f"api-server not healthy in {timeout:.0f} s:\n" + log_path.read_text()[-3000:]
        )
        time.sleep(0.3)


@pytest.fixture
def viewport() -> dict[str, int]:
    """Tall enough for the whole form."""
    return {"width": 1280, "height": 2000}


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator().start() as started:
        yield started


# -- what a user does in the UI ------------------------------------------------------------------
def _goto_connections(page, url: str) -> None:
    """Open the Connections page.

    Airflow 3.1's UI sends a tab's first visit through its login, which lands on the home page: then
    the page is opened again.
    """
    add = page.get_by_role("button", name="Add Connection")
    page.goto(f"{url}/connections", wait_until="networkidle")
    deadline = time.monotonic() + 30
    while not add.is_visible():
        assert time.monotonic() < deadline, f"the Connections page did not open: the browser is at {page.url}"
        if not page.url.endswith("/connections"):
            page.goto(f"{url}/connections", wait_until="networkidle")
        page.wait_for_timeout(100)


def _open_new_connection_form(page, url: str, conn_id: str) -> Any:
    """Connections page → Add Connection → id and type; returns the dialog (Extra Fields not open)."""
    _goto_connections(page, url)
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("textbox", name="Connection ID").fill(conn_id)
    conn_type = dialog.get_by_role("combobox", name="Connection Type")
    conn_type.click()
    conn_type.fill("Yandex Cloud Search")
    page.get_by_role("option", name="Yandex Cloud Search API", exact=True).click()
    dialog.get_by_role("button", name="Extra Fields", exact=True).wait_for()
    return dialog


def _open_section(dialog, title: str, shows: str) -> None:
    """Expand one section of the form (it is an accordion: the others fold); wait for ``shows``."""
    trigger = dialog.get_by_role("button", name=title, exact=True)
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()
    dialog.locator(shows).wait_for(state="visible")


def _open_edit_form(page, url: str, conn_id: str) -> Any:
    """Connections page (afresh: no toasts over the form) → the row's Edit → Extra Fields."""
    _goto_connections(page, url)
    page.get_by_role("row").filter(has_text=conn_id).get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    _open_section(dialog, "Extra Fields", "#element_folder_id")
    return dialog


def _fill(dialog, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        dialog.locator(f"#element_{name}").fill(value)


def _save(page, dialog, conn_id: str) -> None:
    with page.expect_response(
        lambda r: "/api/v2/connections" in r.url and r.request.method in ("POST", "PATCH")
    ) as done:
        dialog.get_by_role("button", name="Save").click()
    assert done.value.ok, done.value.text()
    page.get_by_role("row").filter(has_text=conn_id).wait_for()


def _press_test(page, url: str, conn_id: str) -> str:
    """Press the connection's *Test* button in the list; return the message the UI shows.

    On Airflow 3.3.2 the list's request fails with PORT_ZERO_BUG for every connection without a
    port (ours never has one). When that happens we press again with ``port`` dropped from the request,
    as the fixed Airflow treats it; everything else is what the UI sent.
    """
    _goto_connections(page, url)
    row = page.get_by_role("row").filter(has_text=conn_id)
    with page.expect_response("**/api/v2/connections/test") as tested:
        row.get_by_role("button", name="Test Connection").click()
    response = tested.value
    if response.status == 400 and PORT_ZERO_BUG in response.text():
        assert json.loads(response.request.post_data).get("port") == 0

        def without_port_zero(route) -> None:
            body = json.loads(route.request.post_data)
            if body.get("port") == 0:
                del body["port"]
            route.continue_(post_data=json.dumps(body))

        page.route("**/api/v2/connections/test", without_port_zero)
        with page.expect_response("**/api/v2/connections/test") as tested:
            row.get_by_role("button", name="Test Connection").click()
        response = tested.value
    assert response.ok, response.text()
    message = response.json()["message"]
    shown = page.get_by_role("status").filter(has_text=message[:60])
    shown.first.wait_for()
    return shown.first.inner_text()


def _label_of(dialog, name: str) -> str:
    """The label text of the field whose input is ``#element_<name>`` (same field group)."""
    group = dialog.get_by_role("group").filter(has=dialog.page.locator(f"#element_{name}"))
    return group.locator("label").first.inner_text().strip()


def _key_file_text(key: dict[str, Any]) -> str:
    """An authorized key as ``yc iam key create`` writes it: indented, over many lines."""
    return json.dumps(key, indent=2)


# -- the tests -------------------------------------------------------------------------------------
def test_add_save_and_test_an_authorized_key_connection(airflow_ui, page, emulator, tmp_path):
    url, api = airflow_ui["url"], airflow_ui["api"]
    key = generate_authorized_key()
    emulator.add_authorized_key(key)
    dialog = _open_new_connection_form(page, url, "searchapi_ui")

    # Standard fields: all hidden but the description (an `http` connection shows host, login,
    # password, port and schema here, as inputs named so).
    _open_section(dialog, "Standard Fields", "[name=description]")
    standard = dialog.locator("[data-part=item]").filter(has_text="Standard Fields")
    assert [field.get_attribute("name") for field in standard.locator("input, textarea").all()] == ["description"]

    # The provider's fields, labelled, secrets as password inputs.
    _open_section(dialog, "Extra Fields", "#element_folder_id")
    labels = {
        "folder_id": "Folder ID",
        "service_account_json": "Service account authorized key (JSON)",
        "service_account_json_path": "…or path to the authorized key file",
        "api_key": "API key",
        "iam_token": "IAM token",
        "endpoint": "Search API endpoint",
        "iam_endpoint": "IAM endpoint",
        "grpc_endpoint": "gRPC endpoint",
    }
    for name, label in labels.items():
        assert _label_of(dialog, name) == label, name
    for name in ("service_account_json", "api_key", "iam_token"):
        expected = "password" if SECRETS_AS_PASSWORD_INPUTS else None
        assert dialog.locator(f"#element_{name}").get_attribute("type") == expected, name
    for name in ("folder_id", "service_account_json_path", "endpoint", "iam_endpoint"):
        assert dialog.locator(f"#element_{name}").get_attribute("type") in (None, "text"), name
    for label in ("Timeout (seconds)", "Requests per second", "Transport"):
        assert dialog.get_by_text(label, exact=True).count() == 1, label

    # A key file pasted whole: the single-line input drops its line breaks, which JSON does not mind.
    _fill(
        dialog,
        {
            "folder_id": emulator.folder_id,
            "service_account_json": _key_file_text(key),
            "endpoint": emulator.url,
            "iam_endpoint": f"{emulator.url}/iam/v1/tokens",
        },
    )
    dialog.locator("#element_iam_endpoint").blur()  # no focus ring in the picture
    shot = tmp_path / "connection-form.png"
    dialog.screenshot(path=str(shot))
    if os.environ.get("SEARCHAPI_UPDATE_SCREENSHOTS"):
        shutil.copy(shot, SCREENSHOT)
    _save(page, dialog, "searchapi_ui")

    message = _press_test(page, url, "searchapi_ui")
    assert f"Connected: authorized_key credential accepted for folder {emulator.folder_id}" in message
    assert "PRIVATE KEY" not in message
    assert emulator.stats.snapshot()["token_exchanges"] == 1

    # REST API: the secret extra is masked, the others are shown.
    shown = api.get("/api/v2/connections/searchapi_ui")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    extra = json.loads(body["extra"])
    assert body["conn_type"] == "yandex_searchapi"
    assert extra["service_account_json"] == "***"
    assert extra["folder_id"] == emulator.folder_id and extra["endpoint"] == emulator.url
    assert "PRIVATE KEY" not in shown.text and key["id"] not in shown.text

    # ...but stored whole: what the worker's hook will read.
    stored = _exported_extra(airflow_ui["env"], "searchapi_ui", tmp_path)
    assert json.loads(stored["service_account_json"]) == key

    # The edit form never shows the key back.
    edit = _open_edit_form(page, url, "searchapi_ui")
    assert edit.locator("#element_service_account_json").input_value() == "***"


def test_failure_then_fix_an_api_key_connection_without_retyping_it(airflow_ui, page, emulator, tmp_path):
    url, api = airflow_ui["url"], airflow_ui["api"]
    api_key = emulator.connection_extras(credential="api_key")["api_key"]
    dialog = _open_new_connection_form(page, url, "searchapi_api_key")
    _open_section(dialog, "Extra Fields", "#element_folder_id")
    _fill(dialog, {"folder_id": "b1gnotyours", "api_key": api_key, "endpoint": emulator.url})
    _save(page, dialog, "searchapi_api_key")

    message = _press_test(page, url, "searchapi_api_key")
    assert "Failed" in message and "403" in message and "folder_id" in message
    assert api_key not in message

    # Fix the folder only: the API key field keeps the stored key (the form holds its mask).
    edit = _open_edit_form(page, url, "searchapi_api_key")
    assert edit.locator("#element_folder_id").input_value() == "b1gnotyours"
    assert edit.locator("#element_api_key").input_value() == "***"
    _fill(edit, {"folder_id": emulator.folder_id})
    _save(page, edit, "searchapi_api_key")

    message = _press_test(page, url, "searchapi_api_key")
    assert f"Connected: api_key credential accepted for folder {emulator.folder_id}" in message

    extra = json.loads(api.get("/api/v2/connections/searchapi_api_key").json()["extra"])
    assert extra["api_key"] == "***" and extra["folder_id"] == emulator.folder_id
    assert _exported_extra(airflow_ui["env"], "searchapi_api_key", tmp_path)["api_key"] == api_key


def _exported_extra(env: dict[str, str], conn_id: str, tmp_path: Path) -> dict[str, Any]:
    """The connection's extras as stored (``airflow connections export`` writes them unmasked)."""
    out = tmp_path / f"{conn_id}.json"
    subprocess.run([AIRFLOW, "connections", "export", str(out)], env=env, check=True, capture_output=True)
    return json.loads(json.loads(out.read_text())[conn_id]["extra"])
