"""No credential ever shows: not in logs (at DEBUG), XCom, rendered fields, outputs or exception texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_searchapi.exceptions import SearchApiError
from tests.airflow_env import dags_test
from tests.conftest import make_jpeg


def _secrets_of(extras: dict) -> list[str]:
    found = [extras[name] for name in ("api_key", "iam_token") if name in extras]
    if "service_account_json" in extras:
        pem = json.loads(extras["service_account_json"])["private_key"]
        found.append(pem.split("-----BEGIN PRIVATE KEY-----", 1)[1])
        found += [line for line in pem.splitlines() if len(line) >= 40 and not line.startswith(("-----", "PLEASE"))]
    assert found
    return found


def _without_mask_requests(text: str) -> str:
    """Drop Airflow's own DEBUG lines that echo secret-masking requests.

    At DEBUG, Airflow 3.3's supervisor logs every ``MaskSecret(value=…)`` message it relays, value
    included, and ``airflow dags test`` does not mask its output: Airflow prints the connection's
    extras that way by itself, before any code of ours runs. Every other line must be clean.
    """
    return "\n".join(line for line in text.splitlines() if "MaskSecret(" not in line)


def _files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


@pytest.mark.parametrize("credential", ["authorized_key", "api_key", "iam_token"])
def test_example_dag_at_debug_leaves_no_secret_anywhere(credential, airflow_env, searchapi_emulator, tmp_path):
    extras = searchapi_emulator.connection_extras(credential=credential)
    secrets = _secrets_of(extras)
    env = {
        **airflow_env,
        "AIRFLOW_CONN_SEARCHAPI_DEFAULT": json.dumps({"conn_type": "yandex_searchapi", "extra": extras}),
        "AIRFLOW_CONN_SEARCHAPI_RESULTS_DB": json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "results.db")}),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
    }
    result = dags_test(env, "searchapi_enrich_bucket", {"output_path": f"file://{tmp_path}/out/"})
    secrets += list(searchapi_emulator._tokens)  # every IAM token the emulator minted or issued
    assert searchapi_emulator.stats.snapshot()["search_requests"] > 0

    home = Path(airflow_env["AIRFLOW_HOME"])
    places = {"task output (DEBUG)": _without_mask_requests(result.stdout + result.stderr)}
    # The metadata DB holds XCom, rendered template fields and the task instance; logs and outputs too.
    for path in _files_under(home) + _files_under(tmp_path):
        places[str(path)] = _without_mask_requests(path.read_bytes().decode("utf-8", "replace"))
    for secret in secrets:
        for name, text in places.items():
            assert secret not in text, f"a credential shows in {name}"
    assert searchapi_emulator.stats.snapshot()["iam_authorization_headers"] == 0  # nothing sent to IAM but the JWT


@pytest.mark.parametrize("credential", ["api_key", "iam_token", "authorized_key"])
def test_credentials_are_registered_with_the_masker(credential, make_hook, jpeg):
    from airflow.sdk.log import _secrets_masker

    hook = make_hook(credential)
    hook.search_by_image(image=jpeg)
    extras = hook.get_connection(hook.searchapi_conn_id).extra_dejson
    masker = _secrets_masker()
    for secret in _secrets_of(extras)[:1]:
        assert secret.strip() not in masker.redact(f"the value is {secret}")


def test_exception_texts_hold_no_secret(make_hook, searchapi_emulator):
    static = make_hook("iam_token", conn_id="searchapi_static")
    api_key = make_hook("api_key", conn_id="searchapi_key", folder_id="b1gnotyours")
    keyed = make_hook("authorized_key", conn_id="searchapi_sa")
    searchapi_emulator.revoke_tokens()
    searchapi_emulator._public_keys.clear()
    texts = []
    for hook in (static, api_key, keyed):
        with pytest.raises(SearchApiError) as info:
            hook.search_by_image(image=make_jpeg(1))
        texts.append(f"{info.value!s} {info.value!r}")
        ok, message = hook.test_connection()
        assert not ok
        texts.append(message)
    for hook in (static, api_key, keyed):
        extras = hook.get_connection(hook.searchapi_conn_id).extra_dejson
        for secret in _secrets_of(extras):
            assert not any(secret in text for text in texts)


@pytest.mark.parametrize("quoted", ["authorization: bearer {}", "Authorization=BEARER {}", "api-key {}", "API-KEY\t{}"])
def test_a_server_quoting_the_authorization_header_in_any_case_is_redacted(quoted):
    """A credential of no known shape (a static token, a key of a new format) is known by the word before it."""
    from airflow_provider_searchapi.exceptions import SearchApiHTTPError

    error = SearchApiHTTPError(401, f"refused: {quoted.format('opaque-credential-42')}")
    assert "opaque-credential-42" not in f"{error} {error!r} {error.message}"
