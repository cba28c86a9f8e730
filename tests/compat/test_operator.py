"""SearchByImageOperator as DAG files declare it, on each Airflow version."""

from __future__ import annotations

import pytest
from airflow.sdk import DAG, Asset

from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator


@pytest.mark.parametrize(
    "output_path, asset",
    [("s3://bucket/results/", Asset("s3://bucket/results")), ("s3://bucket/{{ ds }}/", Asset("s3://bucket"))],
)
def test_a_mapped_task_declares_the_asset_of_its_output_path_as_an_unmapped_one_does(output_path, asset):
    """Airflow declares a mapped task's outlets from its partial() arguments (its __init__ runs only on
    the worker, with those outlets): the Asset must be there, or no asset event is ever recorded."""
    with DAG(dag_id="searchapi_mapped_outlets", schedule=None):
        single = SearchByImageOperator(task_id="single", source="s3://bucket/images/", output_path=output_path)
        mapped = SearchByImageOperator.partial(task_id="shards", output_path=output_path).expand(
            source=[["s3://bucket/images/0.jpg"], ["s3://bucket/images/1.jpg"]]
        )
        given = SearchByImageOperator.partial(task_id="given", output_path=output_path, outlets=[]).expand(
            source=[["s3://bucket/images/0.jpg"]]
        )
    assert single.outlets == mapped.outlets == [asset]
    assert given.outlets == []  # outlets given are kept, as SearchByImageOperator(outlets=…) keeps them
