"""SearchApiHook searches the emulator, sync and async, with a connection from the environment."""

from __future__ import annotations

import json

import pytest

from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.testing.samples import SAMPLE_DIR

IMAGE = (SAMPLE_DIR / "sunset.jpg").read_bytes()


def test_sync_search_and_test_connection(searchapi_connection, searchapi_emulator):
    hook = SearchApiHook(searchapi_connection)
    try:
        pages = list(hook.iter_pages(image=IMAGE, max_pages=2))
        assert hook.test_connection()[0] is True
    finally:
        hook.close()
    assert [page.page for page in pages] == [0, 1]
    assert len(pages[0].images) == searchapi_emulator.settings.images_per_page
    stats = searchapi_emulator.stats.snapshot()
    assert stats["uploads"] == 1 + 1  # the image once, then the test search's probe image
    assert stats["token_exchanges"] == 1  # the authorized key's IAM token, shared by both


async def test_async_search(searchapi_connection, searchapi_emulator):
    hook = SearchApiHook(searchapi_connection)
    try:
        pages = [page async for page in hook.aiter_pages(image=IMAGE, max_pages=2)]
    finally:
        await hook.aclose()
    assert [page.page for page in pages] == [0, 1]
    assert pages[0].cbir_id == pages[1].cbir_id
    assert searchapi_emulator.stats.snapshot()["uploads"] == 1


@pytest.mark.parametrize("credential, legacy", [("authorized_key", False), ("authorized_key", True), ("oauth", False)])
def test_a_yandexcloud_connection_searches_with_folder_id_given_to_the_hook(
    searchapi_emulator, monkeypatch, credential, legacy
):
    """The managed Airflow's ``yandexcloud`` connection, its folder given to the hook (as the cluster's
    ``yandexcloud_default`` may name none), with a key, a legacy-prefixed key or an OAuth token."""
    extras = searchapi_emulator.connection_extras(credential=credential, conn_type="yandexcloud")
    folder_id = extras.pop("folder_id")
    if legacy:
        extras = {
            f"extra__yandexcloud__{name}" if name == "service_account_json" else name: v for name, v in extras.items()
        }
    monkeypatch.setenv("AIRFLOW_CONN_YC_COMPAT", json.dumps({"conn_type": "yandexcloud", "extra": extras}))
    hook = SearchApiHook("yc_compat", folder_id=folder_id)
    try:
        assert hook.search_by_image(image=IMAGE).images
    finally:
        hook.close()
    assert searchapi_emulator.stats.snapshot()["token_exchanges"] == 1
