"""Enrich a bucket of images: every image searched by image, results to JSON Lines and a SQL table.

Run it offline (what ``make demo`` does): the ``searchapi_default`` connection points at the emulator,
``searchapi_results_db`` at a SQLite file, and the source defaults to the bundled sample images. In
production, point ``source`` at ``s3://your-bucket/images/**/*.jpg`` with an ``aws`` connection whose
extra has ``endpoint_url: https://storage.yandexcloud.net`` (Yandex Object Storage).
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from airflow_provider_searchapi.testing.samples import SAMPLE_DIR

with DAG(
    dag_id="searchapi_enrich_bucket",
    schedule=None,
    catchup=False,
    tags=["searchapi", "example"],
    params={
        "source": Param(f"file://{SAMPLE_DIR}/", type="string", description="images: URL, folder or glob"),
        "source_conn_id": Param("", type="string", description="storage connection of the source"),
        "output_path": Param("file:///tmp/searchapi-results/", type="string", description="JSON Lines prefix"),
        "output_conn_id": Param("", type="string", description="storage connection of the output"),
        "max_pages": Param(2, type="integer", minimum=1),
    },
) as dag:
    SearchByImageOperator(
        task_id="enrich_images",
        source="{{ params.source }}",
        source_conn_id="{{ params.source_conn_id }}",
        output_path="{{ params.output_path }}{{ ds }}/",
        output_conn_id="{{ params.output_conn_id }}",
        sql_conn_id="searchapi_results_db",
        sql_table="image_search_results",
        max_pages="{{ params.max_pages }}",
        max_concurrency=16,
        max_error_ratio=0.25,
        retries=2,
    )

if __name__ == "__main__":
    dag.test()
