"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_searchapi import __version__
from airflow_provider_searchapi.connection_fields import conn_fields, ui_field_behaviour


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
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_searchapi.hooks.searchapi.SearchApiHook",
                "hook-name": "Yandex Cloud Search API",
                "connection-type": "yandex_searchapi",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": ui_field_behaviour(declarative=True),
            }
        ],
    }
