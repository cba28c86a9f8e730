"""The same enrichment split into shards that run in parallel (dynamic task mapping).

The images are listed once; each shard gets a list of image URLs. The shards share one rate limit,
kept in Redis (the Airflow ``redis`` connection named by the ``rate_limit_conn_id`` param, which needs
the provider's ``redis`` extra): each runs at the whole quota's ``requests_per_second`` and together
they never exceed it, however many run at once, on however many workers. Without Redis (the param
empty), each shard backs off on its own when the API answers 429.
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
        "rate_limit_conn_id": Param("searchapi_redis", type="string"),
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
        requests_per_second=QUOTA_RPS,  # shared by every shard through Redis
        rate_limit_conn_id="{{ params.rate_limit_conn_id }}",
        max_concurrency=8,
        max_active_tis_per_dag=SHARDS,
        max_error_ratio=0.25,
    ).expand(source=list_shards())

if __name__ == "__main__":
    dag.test()
