"""REST honours the environment's proxy settings on both paths, as an httpx client does.

The emulator serves absolute-form request targets, so it doubles as the HTTP proxy: the connection
names an endpoint that cannot resolve (``.invalid``), and only a request sent through the proxy can
be answered.
"""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_searchapi.exceptions import SearchApiHTTPError
from tests.conftest import make_jpeg

UNRESOLVABLE = "http://searchapi.invalid"
PROXY_VARIABLES = [name + "_proxy" for name in ("http", "https", "all", "no")]
PROXY_VARIABLES += [name.upper() for name in PROXY_VARIABLES]


@pytest.fixture
def through_proxy(searchapi_emulator, monkeypatch):
    proxy = searchapi_emulator.connection_extras(credential="api_key")["endpoint"]
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    return proxy


async def _search_async(hook, image: bytes) -> str:
    try:
        return (await hook.asearch_by_image(image=image)).cbir_id
    finally:
        await hook.aclose()


def test_sync_and_async_requests_go_through_the_proxy(through_proxy, make_hook, searchapi_emulator):
    hook = make_hook("api_key", endpoint=UNRESOLVABLE)
    assert hook.search_by_image(image=make_jpeg(1)).cbir_id
    assert asyncio.run(_search_async(hook, make_jpeg(2)))
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 2


def test_a_proxy_without_a_scheme_is_read_as_http(through_proxy, make_hook, searchapi_emulator, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", through_proxy.removeprefix("http://"))  # host:port, as many set it
    hook = make_hook("api_key", endpoint=UNRESOLVABLE)
    assert hook.search_by_image(image=make_jpeg(5)).cbir_id
    assert asyncio.run(_search_async(hook, make_jpeg(6)))
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 2


def test_no_proxy_exempts_the_host(through_proxy, make_hook, searchapi_emulator, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "searchapi.invalid")
    hook = make_hook("api_key", endpoint=UNRESOLVABLE)
    for search in (
        lambda: hook.search_by_image(image=make_jpeg(3)),
        lambda: asyncio.run(_search_async(hook, make_jpeg(4))),
    ):
        with pytest.raises(SearchApiHTTPError) as info:
            search()
        assert info.value.status == 0 and "connection failed" in info.value.message
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0
