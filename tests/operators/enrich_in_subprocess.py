"""Run SearchByImageOperator once, in its own process (the crash test kills it with SIGKILL).

Usage: python enrich_in_subprocess.py SOURCE OUTPUT_PATH SQL_CONN_ID MAX_CONCURRENCY [STATE_PATH]
"""

from __future__ import annotations

import sys

from airflow_provider_searchapi.operators.search_by_image import SearchByImageOperator

if __name__ == "__main__":
    source, output_path, sql_conn_id, concurrency = sys.argv[1:5]
    state_path = sys.argv[5] if len(sys.argv) > 5 else None
    SearchByImageOperator(
        task_id="enrich",
        source=source,
        output_path=output_path,
        sql_conn_id=sql_conn_id,
        sql_table="found",
        max_concurrency=int(concurrency),
        requests_per_second=1000,
        state_path=state_path,
    ).execute({})
