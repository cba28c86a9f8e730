"""The enrichment engine: list images, search them with bounded concurrency, commit rows to sinks.

Serves :class:`~airflow_provider_searchapi.operators.search_by_image.SearchByImageOperator`, custom
``@task`` functions and the benchmarks alike.
"""

from __future__ import annotations

from airflow_provider_searchapi.engine.ledger import Ledger, Reprocess, SqlLedger
from airflow_provider_searchapi.engine.listing import list_images, shard_images
from airflow_provider_searchapi.engine.pipeline import Enricher
from airflow_provider_searchapi.engine.settings import EnrichmentSettings, RunSummary
from airflow_provider_searchapi.engine.sinks import JsonLinesSink, SqlSink, XComSink
from airflow_provider_searchapi.engine.sources import (
    SourceImage,
    images_from_paths,
    images_from_urls,
    stable_uri,
)

__all__ = [
    "EnrichmentSettings",
    "Enricher",
    "JsonLinesSink",
    "Ledger",
    "Reprocess",
    "RunSummary",
    "SourceImage",
    "SqlLedger",
    "SqlSink",
    "XComSink",
    "images_from_paths",
    "images_from_urls",
    "list_images",
    "shard_images",
    "stable_uri",
]
