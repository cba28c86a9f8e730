"""Every request that reaches the Search API took a start slot of the rate limiter first, and hooks of
one folder share one limiter: what the emulator received is compared with the slots taken."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_searchapi.ratelimit import Limiter
from tests.conftest import make_jpeg


class CountingLimiter:
    """Counts the slots taken from the hook's limiter."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.slots = 0

    def acquire(self) -> None:
        self.inner.acquire()
        self.slots += 1

    async def aacquire(self) -> None:
        await self.inner.aacquire()
        self.slots += 1

    def throttled(self, retry_after: float | None) -> None:
        self.inner.throttled(retry_after)


def _counted(hook) -> CountingLimiter:
    counting = hook.__dict__["limiter"] = CountingLimiter(hook.limiter)  # before the transport is made
    return counting


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_the_resend_after_a_401_takes_its_own_slot(make_hook, searchapi_emulator, transport, mode):
    if transport == "grpc":
        pytest.importorskip("grpc", reason="LOUD SKIP: grpcio is not installed")
        hook = make_hook(transport="grpc", grpc_endpoint=searchapi_emulator.start_grpc())
    else:
        hook = make_hook()
    limiter = _counted(hook)

    async def searches() -> None:
        await hook.asearch_by_image(image=make_jpeg(1))
        searchapi_emulator.revoke_tokens()
        await hook.asearch_by_image(image=make_jpeg(2))
        await hook.aclose()

    if mode == "sync":
        hook.search_by_image(image=make_jpeg(1))
        searchapi_emulator.revoke_tokens()
        hook.search_by_image(image=make_jpeg(2))
    else:
        asyncio.run(searches())
    stats = searchapi_emulator.stats.snapshot()
    assert stats["responses"] == {"200": 2, "401": 1} and stats["token_exchanges"] == 2
    assert limiter.slots == stats["search_requests"] == hook.stats.attempts == 3


def test_hooks_of_one_folder_share_one_limiter_whatever_their_connection_or_rate(make_hook, caplog):
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    first = make_hook(conn_id="searchapi_a", requests_per_second=10)
    other_connection = make_hook("api_key", conn_id="searchapi_b", requests_per_second=10)
    with caplog.at_level("WARNING", logger="airflow_provider_searchapi.ratelimit"):
        own_rate = SearchApiHook("searchapi_a", requests_per_second=4)
        assert first.limiter is other_connection.limiter is own_rate.limiter
    assert first.limiter.max_rate == 10
    assert "requests_per_second=4" in caplog.text and "10" in caplog.text
    other_folder = make_hook(conn_id="searchapi_c", folder_id=None, hook_kwargs={"folder_id": "b1gother"})
    assert other_folder.limiter is not first.limiter  # another folder, another quota


@pytest.mark.serial
def test_two_connections_to_one_folder_keep_to_its_quota_together(make_hook, searchapi_emulator):
    from concurrent.futures import ThreadPoolExecutor

    searchapi_emulator.settings.update({"quota_rps": 20.0, "retry_after": 0.2})
    hooks = [make_hook(conn_id=f"searchapi_{name}", requests_per_second=20) for name in ("a", "b")]
    for hook in hooks:
        hook.search_by_image(url="https://x/warm-up.jpg")  # clients and tokens made before the count
    searchapi_emulator.stats.reset()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: hooks[n % 2].search_by_image(url=f"https://x/{n}.jpg"), range(60)))
    stats = searchapi_emulator.stats.snapshot()
    assert stats["responses"] == {"200": 60}  # each at 20/s alone would send 40/s together: 429s


def test_later_pages_the_resend_of_an_expired_cbir_id_and_the_connection_test_take_a_slot_each(
    make_hook, searchapi_emulator
):
    searchapi_emulator.settings.update({"cbir_ttl": 0.0, "max_result_pages": 3})  # every CBIR id expired
    hook = make_hook()
    limiter = _counted(hook)
    pages = list(hook.iter_pages(image=make_jpeg(7), max_pages=3))

    async def async_pages() -> list:
        found = [page async for page in hook.aiter_pages(image=make_jpeg(8), max_pages=3)]
        await hook.aclose()
        return found

    pages += asyncio.run(async_pages())
    assert hook.test_connection()[0]
    stats = searchapi_emulator.stats.snapshot()
    assert stats["responses"].get("404") and len(pages) > 2  # later pages asked by id, then with the image
    assert limiter.slots == stats["search_requests"] == hook.stats.attempts


def test_the_credentials_httpx_flow_never_resends_on_its_own(make_hook, searchapi_emulator):
    import httpx

    hook = make_hook()
    hook.auth.get_token()
    searchapi_emulator.revoke_tokens()
    with httpx.Client(auth=hook.auth) as client:  # the resend after a 401 is the caller's, with a slot
        assert client.post(f"{searchapi_emulator.url}/v2/image/search_by_image", json={}).status_code == 401
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 1
