"""Test helpers shipped with the provider: a local emulator of IAM and Search API, and key helpers.

Used by our tests, the demo and our users' own DAG tests; never imported at run time. Names are
loaded on first use, so that ``python -m airflow_provider_searchapi.testing.emulator`` runs clean.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Emulator", "EmulatorSettings", "generate_authorized_key"]

_WHERE = {
    "Emulator": "airflow_provider_searchapi.testing.emulator",
    "EmulatorSettings": "airflow_provider_searchapi.testing.emulator_state",
    "generate_authorized_key": "airflow_provider_searchapi.testing.keys",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
