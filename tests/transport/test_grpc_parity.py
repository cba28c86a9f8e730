"""REST and gRPC behave alike: the same hook and engine tests, run over both transports."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, XComSink, images_from_urls
from airflow_provider_searchapi.exceptions import SearchApiHTTPError
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.retry import RetryPolicy
from tests.conftest import make_jpeg

pytest.importorskip(
    "grpc", reason="LOUD SKIP: grpcio is not installed (pip install 'airflow-provider-searchapi[grpc]')"
)

FAST = RetryPolicy(max_attempts=5, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture(params=["rest", "grpc"])
def transport(request) -> str:
    return request.param


@pytest.fixture
def hook_over(searchapi_emulator, monkeypatch, transport):
    hooks = []

    def build(credential: str = "authorized_key", **overrides) -> SearchApiHook:
        extras = {**searchapi_emulator.connection_extras(credential=credential, transport=transport), **overrides}
        conn = json.dumps({"conn_type": "yandex_searchapi", "extra": extras})
        monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_PARITY", conn)
        hook = SearchApiHook("searchapi_parity", retry_policy=FAST)
        hooks.append(hook)
        return hook

    yield build
    for hook in hooks:
        hook.close()


@pytest.mark.parametrize("credential", ["authorized_key", "api_key", "iam_token"])
def test_search_with_each_credential(hook_over, transport, credential, searchapi_emulator):
    hook = hook_over(credential)
    result = hook.search_by_image(image=make_jpeg(3))
    assert type(hook.transport).__name__ == {"rest": "RestTransport", "grpc": "GrpcTransport"}[transport]
    assert len(result.images) == 10 and result.cbir_id and result.page == 0
    kind = "Api-Key" if credential == "api_key" else "Bearer"
    assert searchapi_emulator.stats.authorization_headers[kind] == 1


def test_same_results_over_both_transports(searchapi_emulator, monkeypatch):
    results = {}
    for transport in ("rest", "grpc"):
        extras = searchapi_emulator.connection_extras(credential="api_key", transport=transport)
        monkeypatch.setenv(
            "AIRFLOW_CONN_SEARCHAPI_BOTH", json.dumps({"conn_type": "yandex_searchapi", "extra": extras})
        )
        hook = SearchApiHook("searchapi_both")
        results[transport] = list(hook.iter_pages(image=make_jpeg(11), site="example.org", family_mode="strict"))
        hook.close()
    assert results["rest"] == results["grpc"]


@pytest.mark.parametrize("knob", [{"max_result_pages": 1}, {"no_results_rate": 1.0}])
def test_a_last_page_zero_reads_alike_over_both_transports(searchapi_emulator, monkeypatch, knob):
    """``maxPage`` 0 is proto3's default: gRPC cannot tell it from unset, so REST must read it the same."""
    searchapi_emulator.settings.update(knob)
    results = {}
    for transport in ("rest", "grpc"):
        extras = searchapi_emulator.connection_extras(credential="api_key", transport=transport)
        monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_ONE", json.dumps({"conn_type": "yandex_searchapi", "extra": extras}))
        hook = SearchApiHook("searchapi_one")
        results[transport] = hook.search_by_image(image=make_jpeg(11))
        hook.close()
    assert results["rest"] == results["grpc"]
    assert results["rest"].max_page is None


def test_pages_follow_the_cbir_id(hook_over, searchapi_emulator):
    searchapi_emulator.settings.max_result_pages = 6
    hook = hook_over("api_key")
    image = next(make_jpeg(s) for s in range(200) if (hook.search_by_image(image=make_jpeg(s)).max_page or 0) >= 2)
    searchapi_emulator.stats.reset()
    pages = list(hook.iter_pages(image=image, max_pages=3))
    assert [p.page for p in pages] == [0, 1, 2]
    assert searchapi_emulator.stats.snapshot()["uploads"] == 1


@pytest.mark.parametrize("kind", ["429", "429-no-retry-after", "500", "503", "504", "drop"])
def test_transient_faults_are_retried(hook_over, searchapi_emulator, kind):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": [kind], "fault_attempts": 2})
    assert hook_over("api_key").search_by_image(image=make_jpeg(7)).images
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 3


def test_a_stall_past_the_deadline_is_retried(hook_over, searchapi_emulator):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["stall"], "stall_seconds": 1.5})
    assert hook_over("api_key", timeout=0.4).search_by_image(image=make_jpeg(8)).images
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 2


@pytest.mark.parametrize("overrides, status", [({"folder_id": "b1gnotyours"}, 403), ({}, 400)])
def test_permanent_errors_are_not_retried(hook_over, searchapi_emulator, overrides, status):
    hook = hook_over("api_key", **overrides)
    image = make_jpeg(1) if status == 403 else make_jpeg(1)[:-20]
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=image)
    assert info.value.status == status and info.value.request_id
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 1


def test_unknown_cbir_id_is_404(hook_over):
    with pytest.raises(SearchApiHTTPError) as info:
        hook_over("api_key").search_by_image(cbir_id="1/unknown")
    assert info.value.status == 404


def test_revoked_token_costs_one_refresh(hook_over, searchapi_emulator):
    hook = hook_over("authorized_key")
    hook.search_by_image(image=make_jpeg(1))
    searchapi_emulator.revoke_tokens()
    assert hook.search_by_image(image=make_jpeg(2)).images
    stats = searchapi_emulator.stats.snapshot()
    assert stats["token_exchanges"] == 2 and stats["responses"].get("401") == 1


async def test_async_calls_share_one_token_and_keep_the_rate(hook_over, searchapi_emulator):
    hook = hook_over("authorized_key", requests_per_second=20)
    await hook.aget_config()
    results = await asyncio.gather(*(hook.asearch_by_image(url=f"https://x/{i}.jpg") for i in range(30)))
    await hook.aclose()
    arrivals = sorted(searchapi_emulator.stats.arrivals)
    assert len(results) == 30 and searchapi_emulator.stats.snapshot()["token_exchanges"] == 1
    assert (arrivals[-1] - arrivals[0]) >= 29 / 20 * 0.95


def test_the_engine_runs_over_both(hook_over, searchapi_emulator):
    hook = hook_over("api_key", requests_per_second=1000)
    sink = XComSink()
    summary = Enricher(hook, [sink], EnrichmentSettings(max_concurrency=8)).run(
        images_from_urls([f"https://x/{i}.jpg" for i in range(40)])
    )
    assert (summary.searched, summary.failed) == (40, 0)
    assert summary.requests == searchapi_emulator.stats.snapshot()["search_requests"] == 40


def test_one_hook_serves_successive_and_parallel_event_loops(hook_over):
    """Async connections belong to the loop that opened them: a hook used by one ``asyncio.run()``
    after another, without ``aclose()``, or by loops in two threads at once, never lends one across
    (that failed with "Event loop is closed" on the second run)."""
    import threading

    hook = hook_over("api_key", requests_per_second=1000)
    expected = hook.search_by_image(image=make_jpeg(1))

    async def two_searches() -> list:
        return list(await asyncio.gather(*(hook.asearch_by_image(image=make_jpeg(1)) for _ in range(2))))

    for _ in range(3):
        assert asyncio.run(two_searches()) == [expected] * 2
    transport = hook.transport
    per_loop = transport._async_clients if hasattr(transport, "_async_clients") else transport._achannels
    assert len(per_loop) == 1  # those of the loops closed before were dropped
    in_threads: list = []
    threads = [threading.Thread(target=lambda: in_threads.extend(asyncio.run(two_searches()))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert in_threads == [expected] * 4
    assert hook.stats.attempts == 1 + 6 + 4 and not hook.stats.failures
