"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_searchapi import __version__


def _text(label: str, description: str, *, secret: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"
    return {"label": label, "description": description, "schema": schema}


def _number(label: str, description: str, default: float, *, integer: bool = False) -> dict[str, Any]:
    kind = "integer" if integer else "number"
    return {
        "label": label,
        "description": description,
        "schema": {"type": [kind, "null"], "default": default, "exclusiveMinimum": 0},
    }


CONN_FIELDS: dict[str, dict[str, Any]] = {
    "folder_id": _text("Folder ID", "ID of the Yandex Cloud folder billed for searches (b1g…)."),
    "service_account_json": _text(
        "Service account authorized key (JSON)",
        "The whole key file that yc iam key create --output key.json writes. Give one credential only.",
        secret=True,
    ),
    "service_account_json_path": _text("…or path to the authorized key file", "Path of that JSON file on the workers."),
    "api_key": _text("API key", "Service-account API key with scope yc.search-api.execute.", secret=True),
    "iam_token": _text("IAM token", "A static IAM token (lives at most 12 hours).", secret=True),
    "endpoint": _text("Search API endpoint", "Base URL; default https://searchapi.api.cloud.yandex.net"),
    "iam_endpoint": _text("IAM endpoint", "Token exchange URL; default https://iam.api.cloud.yandex.net/iam/v1/tokens"),
    "transport": {
        "label": "Transport",
        "description": "rest (default) or grpc (needs the provider's grpc extra).",
        "schema": {"type": ["string", "null"], "enum": ["rest", "grpc"], "default": "rest"},
    },
    "grpc_endpoint": _text("gRPC endpoint", "host:port for transport=grpc; default searchapi.api.cloud.yandex.net:443"),
    "timeout": _number("Timeout (seconds)", "Seconds to wait for one HTTP request.", 60),
    "requests_per_second": _number(
        "Requests per second",
        "Client-side cap on search calls per second: the quota (10 by default) or this connection's share of it.",
        10,
    ),
}

CONNECTION_TYPE: dict[str, Any] = {
    "hook-class-name": "airflow_provider_searchapi.hooks.searchapi.SearchApiHook",
    "hook-name": "Yandex Cloud Search API",
    "connection-type": "yandex_searchapi",
    "conn-fields": CONN_FIELDS,
    "ui-field-behaviour": {
        "hidden-fields": ["host", "schema", "login", "password", "port", "extra"],
        "relabeling": {},
        "placeholders": {
            "folder_id": "b1g0123456789abcdefg",
            "service_account_json": '{"id": "aje…", "service_account_id": "aje…", "private_key": "-----BEGIN …"}',
            "service_account_json_path": "/opt/airflow/secrets/searchapi-key.json",
            "endpoint": "https://searchapi.api.cloud.yandex.net",
            "iam_endpoint": "https://iam.api.cloud.yandex.net/iam/v1/tokens",
        },
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow: its hooks, operators and connection type."""
    return {
        "package-name": "airflow-provider-searchapi",
        "name": "Yandex Cloud Search API",
        "description": "Search by image with Yandex Cloud Search API v2: enrich image datasets in object storage.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Yandex Cloud Search API",
                "external-doc-url": "https://yandex.cloud/en/docs/search-api/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Yandex Cloud Search API",
                "python-modules": ["airflow_provider_searchapi.hooks.searchapi"],
            }
        ],
        "operators": [
            {
                "integration-name": "Yandex Cloud Search API",
                "python-modules": ["airflow_provider_searchapi.operators.search_by_image"],
            }
        ],
        "connection-types": [CONNECTION_TYPE],
    }
