"""Airflow sees the provider, its connection type and its form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from airflow_provider_searchapi.config import SECRET_FIELDS, SearchApiConfig
from airflow_provider_searchapi.get_provider_info import get_provider_info


def test_connection_type_and_form_fields():
    info = get_provider_info()
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "yandex_searchapi"
    assert conn_type["hook-class-name"] == "airflow_provider_searchapi.hooks.searchapi.SearchApiHook"
    fields = conn_type["conn-fields"]
    for name in SECRET_FIELDS:
        assert fields[name]["schema"]["format"] == "password", name
    for name, field in fields.items():
        assert field["label"] and field["description"], name
        assert field.get("schema", {}).get("format") != "password" or name in SECRET_FIELDS
    assert {"host", "port", "schema", "login", "password"} <= set(conn_type["ui-field-behaviour"]["hidden-fields"])


def test_every_form_field_is_a_setting_the_config_knows():
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    for name in fields:  # an unknown extra is refused by the config, so the form must not offer one
        extras = {"folder_id": "f", "api_key": "AQVN-test-key"}
        samples = {"timeout": "5", "requests_per_second": "5", "transport": "grpc", "grpc_endpoint": "127.0.0.1:1"}
        if name not in extras and name not in SECRET_FIELDS and name != "service_account_json_path":
            extras[name] = samples.get(name, "http://127.0.0.1:1")
        SearchApiConfig.from_extras(extras)


def test_modules_listed_in_provider_info_import():
    import importlib

    info = get_provider_info()
    for group in ("hooks", "operators"):
        if group not in info:
            continue
        for entry in info[group]:
            for module in entry["python-modules"]:
                importlib.import_module(module)


def test_airflow_cli_lists_the_provider_and_the_hook(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = str(Path(sys.executable).with_name("airflow"))
    providers = subprocess.run([airflow, "providers", "list"], env=env, capture_output=True, text=True, timeout=180)
    assert providers.returncode == 0, providers.stderr[-2000:]
    assert "airflow-provider-searchapi" in providers.stdout
    hooks = subprocess.run([airflow, "providers", "hooks"], env=env, capture_output=True, text=True, timeout=180)
    assert "yandex_searchapi" in hooks.stdout
    assert "airflow_provider_searchapi.hooks.searchapi.SearchApiHook" in hooks.stdout
