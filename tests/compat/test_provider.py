"""Airflow's providers manager finds the provider, its hook, its connection type and its form."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import airflow
from airflow.providers.common.compat.sdk import BaseHook
from airflow.providers_manager import ProvidersManager
from packaging.version import Version

from airflow_provider_searchapi import __version__
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

CONN_TYPE = "yandex_searchapi"
SECRET_FIELDS = ("service_account_json", "api_key", "iam_token")
FORM_FIELDS = ("folder_id", *SECRET_FIELDS)
STANDARD_FIELDS = {"host", "login", "password", "port", "schema"}
AIRFLOW_MINOR = Version(airflow.__version__).release[:2]
#: Airflow 3.0 and 3.1 build the form from the hook's methods; 3.2 on reads the provider info.
BUILDS_FORM_FROM_HOOK = AIRFLOW_MINOR < (3, 2)


def _hooks_of_tasks() -> Mapping[str, Any]:
    """The hooks by connection type, as tasks find them (the Task SDK has its own manager from 3.2 on)."""
    if AIRFLOW_MINOR >= (3, 2):
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        return ProvidersManagerTaskRuntime().hooks
    return ProvidersManager().hooks


def test_provider_hook_and_connection_type_are_discovered(monkeypatch):
    assert ProvidersManager().providers["airflow-provider-searchapi"].version == __version__
    hook = _hooks_of_tasks()[CONN_TYPE]
    assert hook is not None, "the hook class failed to import (the providers manager logged why)"
    assert hook.hook_class_name == "airflow_provider_searchapi.hooks.searchapi.SearchApiHook"
    assert hook.connection_type == CONN_TYPE
    assert hook.connection_id_attribute_name == "searchapi_conn_id"
    assert hook.hook_name == "Yandex Cloud Search API"
    assert hook.package_name == "airflow-provider-searchapi"
    monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_COMPAT", json.dumps({"conn_type": CONN_TYPE}))
    found = BaseHook.get_hook("searchapi_compat")  # a connection's hook, the way Airflow builds it
    assert isinstance(found, SearchApiHook) and found.searchapi_conn_id == "searchapi_compat"


def test_connection_form_has_the_fields_and_hides_the_standard_ones():
    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    for name in FORM_FIELDS:
        widget = widgets.get(f"extra__{CONN_TYPE}__{name}")
        assert widget is not None, f"no form field {name}"
        assert widget.field_name == name
        # A password input on 3.0/3.1 (wtforms PasswordField), format "password" from 3.2 on.
        assert widget.is_sensitive is (name in SECRET_FIELDS), name
    behaviour = manager.field_behaviours[CONN_TYPE]
    assert behaviour is not None
    assert STANDARD_FIELDS <= set(behaviour["hidden_fields"])
