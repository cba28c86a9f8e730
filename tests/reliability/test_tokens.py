"""Tokens that expire or are revoked mid-run: one refresh, no failed image."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, XComSink, images_from_urls

pytestmark = pytest.mark.serial  # measures time or rates: `make test` runs it alone


def _urls(count: int) -> list[str]:
    return [f"https://images.example.com/{i}.jpg" for i in range(count)]


def test_tokens_revoked_mid_run_cost_exactly_one_refresh(make_hook, searchapi_emulator):
    searchapi_emulator.settings.latency = 0.02
    hook = make_hook("authorized_key", requests_per_second=1000)

    def revoke_when_a_third_is_done():
        while searchapi_emulator.stats.snapshot()["search_requests"] < 100:
            time.sleep(0.005)
        searchapi_emulator.revoke_tokens()

    revoker = threading.Thread(target=revoke_when_a_third_is_done)
    revoker.start()
    summary = Enricher(hook, [XComSink()], EnrichmentSettings(max_concurrency=16)).run(images_from_urls(_urls(300)))
    revoker.join()
    stats = searchapi_emulator.stats.snapshot()
    assert (summary.searched, summary.failed) == (300, 0)
    assert stats["token_exchanges"] == 2
    assert 1 <= stats["responses"].get("401", 0) <= 16  # only requests in flight at the revocation


def test_short_lived_tokens_are_refreshed_before_they_expire(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update({"token_ttl": 1.0, "latency": 0.01})
    hook = make_hook("authorized_key", requests_per_second=100)
    started = time.monotonic()
    summary = Enricher(hook, [XComSink()], EnrichmentSettings(max_concurrency=4)).run(images_from_urls(_urls(250)))
    elapsed = time.monotonic() - started
    stats = searchapi_emulator.stats.snapshot()
    assert (summary.searched, summary.failed) == (250, 0)
    assert stats["responses"].get("401", 0) == 0  # never sent an expired token
    assert 2 <= stats["token_exchanges"] <= elapsed / 0.9 + 2
