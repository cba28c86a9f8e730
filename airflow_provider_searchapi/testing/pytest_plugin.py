"""pytest fixtures for testing DAGs that use this provider, with no cloud account.

Installed with the provider (``pytest11`` entry point), so any test can ask for them (the emulator
needs the ``emulator`` extra: ``pip install 'airflow-provider-searchapi[emulator]'``)::

    def test_my_dag(searchapi_connection, searchapi_emulator):
        ...  # the connection "searchapi_default" now points at the emulator
        assert searchapi_emulator.stats.snapshot()["search_requests"] == 3
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported by the fixtures: loading the plugin must not need the emulator extra
    from airflow_provider_searchapi.testing.emulator import Emulator


@pytest.fixture
def searchapi_emulator() -> Iterator[Emulator]:
    """A started emulator on 127.0.0.1 (stopped after the test)."""
    from airflow_provider_searchapi.testing.emulator import Emulator

    with Emulator().start() as emulator:
        yield emulator


@pytest.fixture
def searchapi_authorized_key() -> dict[str, Any]:
    """A throw-away authorized key (a dict; ``json.dumps`` it for the file's text)."""
    from airflow_provider_searchapi.testing.keys import generate_authorized_key

    return generate_authorized_key()


@pytest.fixture
def searchapi_connection(
    searchapi_emulator: Emulator, searchapi_authorized_key: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> str:
    """Connection ``searchapi_default`` (authorized key) pointing at the emulator; returns its id."""
    extras = searchapi_emulator.connection_extras(key=searchapi_authorized_key)
    value = json.dumps({"conn_type": "yandex_searchapi", "extra": extras})
    monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_DEFAULT", value)
    return "searchapi_default"
