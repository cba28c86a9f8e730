"""Airflow sees the provider, its connection type and its form, on 3.2+ and on 3.0/3.1; the docs list
every field of the connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from airflow_provider_searchapi import connection_fields
from airflow_provider_searchapi.config import SearchApiConfig
from airflow_provider_searchapi.connection_fields import FIELDS, FORM_FIELDS, SECRET_FIELDS
from airflow_provider_searchapi.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[1]
STANDARD_FIELDS = {"host", "schema", "login", "password", "port"}


def test_connection_type_and_declarative_form_fields():
    info = get_provider_info()
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "yandex_searchapi"
    assert conn_type["hook-class-name"] == "airflow_provider_searchapi.hooks.searchapi.SearchApiHook"
    fields = conn_type["conn-fields"]
    assert list(fields) == [field.name for field in FORM_FIELDS]
    assert {"folder_id", "service_account_json", "api_key", "iam_token"} <= set(fields)
    for field in FORM_FIELDS:
        declared = fields[field.name]
        assert (declared["label"], declared["description"]) == (field.label, field.help)
        assert (declared["schema"].get("format") == "password") is field.secret, field.name
    assert set(SECRET_FIELDS) == {"service_account_json", "api_key", "iam_token"}
    assert fields["transport"]["schema"]["enum"] == ["rest", "grpc"]
    behaviour = conn_type["ui-field-behaviour"]
    assert STANDARD_FIELDS <= set(behaviour["hidden-fields"])
    assert behaviour["placeholders"]["folder_id"].startswith("b1g")


def test_every_field_is_a_setting_the_config_knows_and_nothing_else_is():
    samples = {"timeout": "5", "requests_per_second": "5", "transport": "grpc", "grpc_endpoint": "127.0.0.1:1"}
    samples |= {"verify_tls": "false", "folder_id": "b1g"}
    defaults = SearchApiConfig.from_connection("yandex_searchapi", {"folder_id": "f", "api_key": "AQVN-test-key"})
    for field in FIELDS:
        if field.secret or field.name == "service_account_json_path":
            continue
        extras = {
            "folder_id": "f",
            "api_key": "AQVN-test-key",
            field.name: samples.get(field.name, "http://127.0.0.1:1"),
        }
        assert getattr(SearchApiConfig.from_connection("yandex_searchapi", extras), field.name) != getattr(
            defaults, field.name
        ), field.name
    with pytest.raises(ValueError, match="'oauth'.*not a setting"):
        SearchApiConfig.from_connection(
            "yandex_searchapi", {"folder_id": "f", "oauth": "y0_token"}
        )  # yandexcloud connections only


def _airflow_ui_stand_ins(monkeypatch) -> type:
    """Put Airflow's own stand-ins for wtforms/FAB where the widget function imports them, as Airflow
    3.0/3.1's UI does to read hook widgets (installed Airflow's classes, so a change there shows)."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService as meta

    names = {
        "wtforms": {"StringField": meta.MockStringField, "PasswordField": meta.MockPasswordField},
        "wtforms.validators": {"Optional": meta.MockOptional, "any_of": meta.MockEnum},
        "flask_babel": {"lazy_gettext": str},
        "flask_appbuilder": {},
        "flask_appbuilder.fieldwidgets": {
            "BS3TextFieldWidget": meta.MockAnyWidget,
            "BS3PasswordFieldWidget": meta.MockAnyWidget,
        },
    }
    for module_name, attributes in names.items():
        module = types.ModuleType(module_name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, module_name, module)
    return meta


def test_hook_widgets_as_airflow_3_0_and_3_1_read_them(monkeypatch):
    meta = _airflow_ui_stand_ins(monkeypatch)
    widgets = connection_fields.connection_form_widgets()
    declared = get_provider_info()["connection-types"][0]["conn-fields"]
    assert list(widgets) == list(declared)
    for name, widget in widgets.items():
        dumped = widget.param.dump()
        assert (dumped["schema"]["title"], dumped["description"]) == (
            declared[name]["label"],
            declared[name]["description"],
        )
        assert dumped["schema"]["type"] == ["string", "null"]
        secret = name in SECRET_FIELDS
        assert isinstance(widget, meta.MockPasswordField if secret else meta.MockStringField), name
        assert (dumped["schema"].get("format") == "password") is secret, name
    assert widgets["transport"].param.dump()["schema"]["enum"] == ["rest", "grpc"]
    assert widgets["transport"].param.dump()["value"] == "rest"

    behaviour = connection_fields.ui_field_behaviour()
    standard = meta._make_standard_fields(behaviour)
    for name in ("host", "url_schema", "login", "password", "port"):
        assert getattr(standard, name).hidden, name
    assert standard.description is None  # the description stays visible
    assert behaviour["placeholders"] == get_provider_info()["connection-types"][0]["ui-field-behaviour"]["placeholders"]


def test_ui_field_behaviour_passes_the_providers_manager_checks():
    from airflow.providers_manager import _create_customized_form_field_behaviours_schema_validator

    behaviour = connection_fields.ui_field_behaviour()
    _create_customized_form_field_behaviours_schema_validator().validate(behaviour)
    assert STANDARD_FIELDS | {"extra"} == set(behaviour["hidden_fields"])
    connection_fields.ui_field_behaviour()["placeholders"].clear()  # a fresh dict each time (Airflow edits it)
    assert connection_fields.ui_field_behaviour()["placeholders"]


def test_hook_widgets_with_the_real_wtforms_and_fab():
    try:
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from werkzeug.datastructures import MultiDict
        from wtforms import Form, PasswordField, StringField
    except ImportError as err:
        pytest.skip(
            f"NOT CHECKED: {err.name} is not installed, so the widgets were not built with the real wtforms/"
            "flask_appbuilder (the stand-in test above checks their structure); install "
            "apache-airflow-providers-fab to run this check"
        )
    widgets = connection_fields.connection_form_widgets()
    for name, widget in widgets.items():
        secret = name in SECRET_FIELDS
        assert widget.field_class is (PasswordField if secret else StringField), name
        # what Airflow's providers manager reads to mark a field sensitive
        assert (getattr(widget.field_class.widget, "input_type", None) == "password") is secret, name
        assert isinstance(widget.kwargs["widget"], BS3PasswordFieldWidget if secret else BS3TextFieldWidget), name
    form_class = type("ConnectionForm", (Form,), widgets)
    form = form_class(MultiDict({"folder_id": "b1g", "transport": "soap", "api_key": ""}))
    assert not form.validate()
    assert list(form.errors) == ["transport"]  # empty fields are fine; a wrong choice is not
    assert form_class(MultiDict({"transport": "grpc"})).validate()
    assert str(form.folder_id.label.text) == "Folder ID"
    assert 'type="password"' in str(form.api_key())


def _table_rows(path: Path) -> str:
    return "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("|"))


@pytest.mark.parametrize("doc", ["README.md", "docs/connection.md"])
def test_the_docs_tables_list_every_field(doc):
    rows = _table_rows(ROOT / doc)
    for field in FIELDS:
        assert f"| `{field.name}` |" in rows, f"{doc} lacks the extra {field.name}"
        if doc == "docs/connection.md":
            assert f"| {field.label} | `{field.name}` |" in rows, f"{doc} lacks {field.name}'s label {field.label}"


def test_modules_listed_in_provider_info_import():
    import importlib

    info = get_provider_info()
    for group in ("hooks", "operators"):
        for entry in info.get(group, []):
            for module in entry["python-modules"]:
                importlib.import_module(module)


def test_airflow_cli_lists_the_provider_and_the_hook(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)  # it prints a line before the JSON
    airflow = str(Path(sys.executable).with_name("airflow"))
    command = [airflow, "providers", "hooks", "--output", "json"]  # one Airflow start: each takes seconds
    hooks = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert hooks.returncode == 0, hooks.stderr[-2000:]
    ours = [hook for hook in json.loads(hooks.stdout) if hook["connection_type"] == "yandex_searchapi"]
    assert ours == [
        {
            "connection_type": "yandex_searchapi",
            "class": "airflow_provider_searchapi.hooks.searchapi.SearchApiHook",
            "conn_id_attribute_name": "searchapi_conn_id",
            "package_name": "airflow-provider-searchapi",
            "hook_name": "Yandex Cloud Search API",
        }
    ]
