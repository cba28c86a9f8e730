"""Enrich a bucket of images: every image searched by image, results to JSON Lines and a SQL table.

Run it offline (what ``make demo`` does): the ``searchapi_default`` connection points at the emulator,
``searchapi_results_db`` at a SQLite file, and the source defaults to the bundled sample images. In
production, point ``source`` at ``s3://your-bucket/images/**/*.jpg`` with an ``aws`` connection whose
extra has ``endpoint_url: https://storage.yandexcloud.net`` (Yandex Object Storage).

It runs daily and writes each day's rows to a partition of its own (``…/2026-12-01/``), while the
ledger beside them (``state_path``) remembers every image searched on any day: the second day
searches only the images that are new or changed since, and reports the others as skipped as done.
``airflow dags test searchapi_enrich_bucket 2026-12-01`` and then ``… 2026-12-02`` show it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from airflow_provider_searchapi.testing.samples import SAMPLE_DIR

with DAG(
    dag_id="searchapi_enrich_bucket",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
    catchup=False,
    tags=["searchapi", "example"],
    params={
        "source": Param(f"file://{SAMPLE_DIR}/", type="string", description="images: URL, folder or glob"),
        "source_conn_id": Param("", type="string", description="storage connection of the source"),
        "output_path": Param("file:///tmp/searchapi-results/", type="string", description="JSON Lines prefix"),
        "output_conn_id": Param("", type="string", description="storage connection of the output"),
        "max_pages": Param(2, type="integer", minimum=1),
        "reprocess": Param("changed", enum=["changed", "never", "all", "failed"], description="search again"),
    },
) as dag:
    SearchByImageOperator(
        task_id="enrich_images",
        source="{{ params.source }}",
        source_conn_id="{{ params.source_conn_id }}",
        output_path="{{ params.output_path }}{{ ds }}/",
        output_conn_id="{{ params.output_conn_id }}",
        state_path="{{ params.output_path }}_state/",  # the ledger, kept across days
        reprocess="{{ params.reprocess }}",
        sql_conn_id="searchapi_results_db",
        sql_table="image_search_results",
        max_pages="{{ params.max_pages }}",
        max_concurrency=16,
        max_error_ratio=0.25,
        retries=2,
    )

if __name__ == "__main__":
    dag.test()
