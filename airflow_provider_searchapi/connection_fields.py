"""The ``yandex_searchapi`` connection's fields, defined once.

The table drives the connection form on every Airflow 3 version (declarative ``conn-fields`` from 3.2
on, the hook's wtforms widgets on 3.0/3.1), the set of extras the config accepts, and the docs' tables
(a test checks them). Imports nothing heavy: Airflow reads it through the provider info.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_ENDPOINT = "https://searchapi.api.cloud.yandex.net"
DEFAULT_IAM_ENDPOINT = "https://iam.api.cloud.yandex.net/iam/v1/tokens"
DEFAULT_GRPC_ENDPOINT = "searchapi.api.cloud.yandex.net:443"
DEFAULT_METADATA_ENDPOINT = "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token"
#: The default quota of search-by-image calls per second (per cloud).
DEFAULT_REQUESTS_PER_SECOND = 10.0
DEFAULT_TIMEOUT_SECONDS = 60.0

#: Standard connection fields the form hides: everything lives in the extras.
HIDDEN_STANDARD_FIELDS = ("host", "schema", "login", "password", "port", "extra")


@dataclass(frozen=True)
class ConnField:
    """One extra of the connection.

    :param name: the key in the connection's extras.
    :param label: the form's label.
    :param help: the form's description.
    :param kind: JSON schema type of the value.
    :param secret: a credential: a password input, masked in logs.
    :param default: the value used when the field is empty.
    :param placeholder: the hint shown in an empty input.
    :param choices: the allowed values, if only some are.
    :param in_form: shown in the form (the others are set through the extras' JSON).
    """

    name: str
    label: str
    help: str
    kind: Literal["string", "number", "boolean"] = "string"
    secret: bool = False
    default: Any = None
    placeholder: str | None = None
    choices: tuple[str, ...] = ()
    in_form: bool = True


FIELDS: tuple[ConnField, ...] = (
    ConnField(
        "folder_id",
        "Folder ID",
        "Required: ID of the Yandex Cloud folder billed for searches (b1g…).",
        placeholder="b1g0123456789abcdefg",
    ),
    ConnField(
        "service_account_json",
        "Service account authorized key (JSON)",
        "The whole key file that yc iam key create --output key.json writes. Give one credential only.",
        secret=True,
        placeholder='{"id": "aje…", "service_account_id": "aje…", "private_key": "-----BEGIN …"}',
    ),
    ConnField(
        "service_account_json_path",
        "…or path to the authorized key file",
        "Path of that JSON file on the workers.",
        placeholder="/opt/airflow/secrets/searchapi-key.json",
    ),
    ConnField("api_key", "API key", "Service-account API key with scope yc.search-api.execute.", secret=True),
    ConnField("iam_token", "IAM token", "A static IAM token (lives at most 12 hours).", secret=True),
    ConnField("endpoint", "Search API endpoint", "Base URL of the Search API.", placeholder=DEFAULT_ENDPOINT),
    ConnField("iam_endpoint", "IAM endpoint", "URL of the IAM token exchange.", placeholder=DEFAULT_IAM_ENDPOINT),
    ConnField(
        "transport",
        "Transport",
        "rest (default) or grpc (needs the provider's grpc extra).",
        default="rest",
        choices=("rest", "grpc"),
    ),
    ConnField(
        "grpc_endpoint",
        "gRPC endpoint",
        "host:port of the gRPC service (transport grpc).",
        placeholder=DEFAULT_GRPC_ENDPOINT,
    ),
    ConnField(
        "timeout",
        "Timeout (seconds)",
        "Seconds to wait for one HTTP request.",
        kind="number",
        default=DEFAULT_TIMEOUT_SECONDS,
        placeholder="60",
    ),
    ConnField(
        "requests_per_second",
        "Requests per second",
        "Client-side cap on search calls per second: the quota (10 by default) or this connection's share of it.",
        kind="number",
        default=DEFAULT_REQUESTS_PER_SECOND,
        placeholder="10",
    ),
    ConnField(
        "rate_limit_conn_id",
        "Shared rate limit: Redis connection",
        "An Airflow redis connection: every task of every worker using this folder then shares one limit "
        "of requests_per_second kept there (needs the provider's redis extra).",
        placeholder="redis_default",
    ),
    ConnField(
        "verify_tls",
        "Verify TLS certificates",
        "false turns certificate checks off and logs a warning: for a local emulator or a proxy you trust.",
        kind="boolean",
        default=True,
        in_form=False,
    ),
    ConnField(
        "metadata_endpoint",
        "VM metadata endpoint",
        "URL of the VM metadata token, used when no credential is given.",
        placeholder=DEFAULT_METADATA_ENDPOINT,
        in_form=False,
    ),
)

FIELD_NAMES = frozenset(field.name for field in FIELDS)
SECRET_FIELDS = tuple(field.name for field in FIELDS if field.secret)
FORM_FIELDS = tuple(field for field in FIELDS if field.in_form)


def conn_fields() -> dict[str, dict[str, Any]]:
    """The declarative ``conn-fields`` of the provider info (read by Airflow 3.2 and later)."""
    fields = {}
    for field in FORM_FIELDS:
        schema: dict[str, Any] = {"type": [field.kind, "null"]}
        if field.secret:
            schema["format"] = "password"
        if field.default is not None:
            schema["default"] = field.default
        if field.choices:
            schema["enum"] = list(field.choices)
        if field.kind == "number":
            schema["exclusiveMinimum"] = 0
        fields[field.name] = {"label": field.label, "description": field.help, "schema": schema}
    return fields


def ui_field_behaviour(*, declarative: bool = False) -> dict[str, Any]:
    """The form's hidden standard fields and placeholders: what the hook's ``get_ui_field_behaviour()``
    returns on Airflow 3.0/3.1, or with ``declarative`` the provider info's ``ui-field-behaviour`` (3.2+).

    :param declarative: spell the keys as the provider info does.
    """
    placeholders = {field.name: field.placeholder for field in FORM_FIELDS if field.placeholder}
    hidden = "hidden-fields" if declarative else "hidden_fields"
    return {hidden: list(HIDDEN_STANDARD_FIELDS), "relabeling": {}, "placeholders": placeholders}


def connection_form_widgets() -> dict[str, Any]:
    """What the hook's ``get_connection_form_widgets()`` returns, for Airflow 3.0 and 3.1.

    wtforms fields with flask_appbuilder widgets, imported here: they exist only where the ``fab``
    provider is installed, and Airflow's UI swaps in its own stand-ins for these names.
    """
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import PasswordField, StringField
    from wtforms.validators import Optional, any_of

    widgets = {}
    for field in FORM_FIELDS:
        # numbers too are strings: the config reads "0.5" as 0.5, where an IntegerField would refuse it
        field_class, widget = (
            (PasswordField, BS3PasswordFieldWidget) if field.secret else (StringField, BS3TextFieldWidget)
        )
        widgets[field.name] = field_class(
            lazy_gettext(field.label),
            [Optional(), any_of(list(field.choices))] if field.choices else [Optional()],
            description=field.help,
            default=field.default if isinstance(field.default, str) else None,
            widget=widget(),
        )
    return widgets
