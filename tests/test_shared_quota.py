"""One 10 requests/s quota, four task processes: shared through a real Redis, or adaptive without it.

Each process is a fresh Python running the engine (tests/quota_worker.py) against the emulator, which
answers 429 past 10 searches per second, as the Search API does past the folder's quota.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.airflow_env import ROOT
from tests.conftest import make_jpeg, write_images

pytestmark = pytest.mark.serial  # measures time or rates: `make test` runs it alone

pytest.importorskip("pyrate_limiter", reason="LOUD SKIP: the redis extra (pyrate-limiter) is not installed")

QUOTA = 10.0
PROCESSES, IMAGES = 4, 50


@pytest.fixture
def quota_conn_id(searchapi_emulator, monkeypatch) -> str:
    """Connection ``searchapi_quota`` to an emulator with a 10 requests/s quota and 300 ms latency."""
    searchapi_emulator.settings.update({"quota_rps": QUOTA, "latency": 0.3})
    extras = {**searchapi_emulator.connection_extras(credential="api_key"), "requests_per_second": QUOTA}
    monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_QUOTA", json.dumps({"conn_type": "yandex_searchapi", "extra": extras}))
    return "searchapi_quota"


def run_processes(tmp_path, conn_id: str, rate_limit_conn_id: str = "") -> list[dict]:
    """Four task processes at once, each enriching its own 50 images; their summaries."""
    workers = []
    for index in range(PROCESSES):
        write_images(tmp_path / f"in{index}", IMAGES, start=index * IMAGES)
        command = [sys.executable, "-m", "tests.quota_worker", conn_id, f"file://{tmp_path}/in{index}/"]
        command += [f"file://{tmp_path}/out{index}/", rate_limit_conn_id]
        workers.append(subprocess.Popen(command, cwd=ROOT, env=os.environ, stdout=subprocess.PIPE, text=True))
    summaries = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    return summaries


def test_four_processes_share_one_quota_through_redis(tmp_path, quota_conn_id, redis_conn_id, searchapi_emulator):
    summaries = run_processes(tmp_path, quota_conn_id, redis_conn_id)
    assert [(s["searched"], s["failed"], s["throttled_429"]) for s in summaries] == [(IMAGES, 0, 0)] * PROCESSES
    stats = searchapi_emulator.stats.snapshot()
    assert stats["responses"] == {"200": PROCESSES * IMAGES}  # not one 429
    arrivals = sorted(searchapi_emulator.stats.arrivals)
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 0.9 * QUOTA <= rate <= 1.02 * QUOTA  # the processes together keep the quota busy, never over it


def test_without_redis_four_adaptive_processes_finish_every_image(tmp_path, quota_conn_id, searchapi_emulator):
    summaries = run_processes(tmp_path, quota_conn_id)
    assert [(s["searched"], s["failed"]) for s in summaries] == [(IMAGES, 0)] * PROCESSES
    stats = searchapi_emulator.stats.snapshot()
    throttled = sum(s["throttled_429"] for s in summaries)
    assert stats["responses"] == {"200": PROCESSES * IMAGES, "429": throttled}  # every 429 is counted
    # They settle under the quota instead of fighting (7 % here; the goal is 10 %, and a loaded machine
    # staggers the processes' starts, so the bound leaves room).
    assert throttled <= 0.15 * stats["search_requests"]


def test_redis_stopped_mid_run_the_run_completes(quota_conn_id, redis_server, redis_conn_id, caplog):
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    images = [make_jpeg(seed) for seed in range(40)]
    hook = SearchApiHook(quota_conn_id, rate_limit_conn_id=redis_conn_id)
    stopper = threading.Timer(1.5, redis_server.stop)
    stopper.start()

    async def run() -> list:
        results = await asyncio.gather(*(hook.asearch_by_image(image=image) for image in images))
        await hook.aclose()
        return results

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_searchapi.redis_limiter"):
        results = asyncio.run(run())
    stopper.join()
    assert len(results) == 40 and all(result.images for result in results)
    assert time.monotonic() - started >= 39 / QUOTA * 0.9  # still held to the rate after Redis went
    warnings = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1, warnings
