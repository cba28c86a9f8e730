"""Test helpers shipped with the provider: a local emulator of IAM and Search API, and key helpers.

Used by our tests, the demo and our users' own DAG tests; never imported at run time.
"""

from __future__ import annotations

from airflow_provider_searchapi.testing.emulator import Emulator, EmulatorSettings
from airflow_provider_searchapi.testing.keys import generate_authorized_key

__all__ = ["Emulator", "EmulatorSettings", "generate_authorized_key"]
