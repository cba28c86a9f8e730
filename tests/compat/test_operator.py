"""SearchByImageOperator as DAG files declare it, on each Airflow version."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
from airflow.sdk import DAG, Asset

from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from tests.airflow_env import AIRFLOW, AIRFLOW_VERSION, ROOT


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


DAG_FILE = """
import os

from airflow.sdk import DAG

from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator
from airflow_provider_searchapi.testing.samples import sample_images

with DAG(dag_id="searchapi_mapped_asset", schedule=None) as dag:
    SearchByImageOperator.partial(task_id="shards", output_path=os.environ["SEARCHAPI_OUT"]).expand(
        source=[[f"file://{path}"] for path in sample_images()[:2]]
    )
"""


def test_each_mapped_task_records_an_event_of_the_asset(tmp_path, searchapi_connection):
    """A real run: the mapped tasks succeed and Airflow records the Asset's events (3.0 fails a task
    whose outlets it does not know)."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "mapped.py").write_text(DAG_FILE)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT),
        "SEARCHAPI_OUT": f"file://{out}/",
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    # Airflow 3.0 records events only of Assets a DAG processor has activated: reserialize does that there.
    reserialize = [["dags", "reserialize"]] if AIRFLOW_VERSION < (3, 1) else []
    for command in (["db", "migrate"], *reserialize, ["dags", "test", "searchapi_mapped_asset"]):
        done = subprocess.run([AIRFLOW, *command], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "state=success" in done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "home" / "airflow.db") as db:
        query = "SELECT COUNT(*) FROM asset_event JOIN asset ON asset.id = asset_event.asset_id WHERE asset.uri = ?"
        assert db.execute(query, (f"file://{out}",)).fetchone()[0] == 2
