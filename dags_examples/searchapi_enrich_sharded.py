"""The same enrichment split into shards that run in parallel (dynamic task mapping).

The images are listed once; each shard gets a list of image URLs and its share of the quota
(``requests_per_second`` = quota ÷ shards), so the shards together never exceed it. Limit how many
shards run at once with ``max_active_tis_per_dag`` or an Airflow pool.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airflow_provider_searchapi.engine import shard_images
from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from airflow_provider_searchapi.testing.samples import SAMPLE_DIR

QUOTA_RPS = 10  # the folder's quota of search-by-image calls per second
SHARDS = 4

with DAG(
    dag_id="searchapi_enrich_sharded",
    schedule=None,
    catchup=False,
    tags=["searchapi", "example"],
    params={
        "source": Param(f"file://{SAMPLE_DIR}/", type="string"),
        "source_conn_id": Param("", type="string"),
        "output_path": Param("file:///tmp/searchapi-results-sharded/", type="string"),
    },
) as dag:

    @task
    def list_shards(params: dict | None = None) -> list[list[str]]:
        assert params is not None
        return shard_images(params["source"], SHARDS, conn_id=params["source_conn_id"] or None)

    SearchByImageOperator.partial(
        task_id="enrich_shard",
        source_conn_id="{{ params.source_conn_id }}",
        output_path="{{ params.output_path }}",
        requests_per_second=QUOTA_RPS / SHARDS,
        max_concurrency=8,
        max_active_tis_per_dag=SHARDS,
        max_error_ratio=0.25,
    ).expand(source=list_shards())

if __name__ == "__main__":
    dag.test()
