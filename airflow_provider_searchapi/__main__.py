"""``python -m airflow_provider_searchapi``: see :mod:`airflow_provider_searchapi.cli`."""

from __future__ import annotations

import sys

from airflow_provider_searchapi.cli import main

if __name__ == "__main__":
    sys.exit(main())
