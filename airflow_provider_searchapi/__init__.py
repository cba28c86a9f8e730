"""Apache Airflow provider for Yandex Cloud Search API v2 *search by image*."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
