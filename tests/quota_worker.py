"""One task process of the quota tests: enrich a folder with the engine and print the run's summary.

python -m tests.quota_worker CONN_ID SOURCE_URL OUTPUT_URL [RATE_LIMIT_CONN_ID]
"""

from __future__ import annotations

import json
import sys


def main(conn_id: str, source: str, output: str, rate_limit_conn_id: str = "") -> None:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_searchapi.engine import Enricher, JsonLinesSink, list_images
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    hook = SearchApiHook(conn_id, rate_limit_conn_id=rate_limit_conn_id)
    summary = Enricher(hook, [JsonLinesSink(ObjectStoragePath(output))]).run(list_images(source))
    print(json.dumps(summary.to_dict()))


if __name__ == "__main__":
    main(*sys.argv[1:])
