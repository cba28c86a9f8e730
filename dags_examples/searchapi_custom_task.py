"""Reuse the hook and the engine in your own ``@task`` functions."""

from __future__ import annotations

from airflow.sdk import DAG, task

from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, XComSink, list_images
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.testing.samples import SAMPLE_DIR

with DAG(dag_id="searchapi_custom_task", schedule=None, catchup=False, tags=["searchapi", "example"]) as dag:

    @task
    def top_hosts(path: str = str(SAMPLE_DIR / "sunset.jpg"), pages: int = 2) -> dict[str, int]:
        """The hook alone: which sites show images like this one?"""
        hook = SearchApiHook()  # connection "searchapi_default"
        with open(path, "rb") as handle:
            image = handle.read()
        counts: dict[str, int] = {}
        for page in hook.iter_pages(image=image, max_pages=pages):
            for found in page.images:
                counts[found.host] = counts.get(found.host, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1])[:5])

    @task
    def largest_matches(source: str = f"file://{SAMPLE_DIR}/*.jpg") -> list[dict]:
        """The engine in a task: search a folder, keep the largest match of each image."""
        sink = XComSink()
        Enricher(SearchApiHook(), [sink], EnrichmentSettings(max_concurrency=4)).run(list_images(source))
        best: dict[str, dict] = {}
        for row in sink.results:
            if row["url"] and row["width"] * row["height"] > best.get(row["source_uri"], {}).get("area", -1):
                best[row["source_uri"]] = {"url": row["url"], "area": row["width"] * row["height"]}
        return [{"source": source, **match} for source, match in sorted(best.items())]

    top_hosts()
    largest_matches()

if __name__ == "__main__":
    dag.test()
