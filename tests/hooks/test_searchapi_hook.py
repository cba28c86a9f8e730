"""SearchApiHook against the emulator over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from airflow_provider_searchapi.exceptions import InvalidImageError, SearchApiError, SearchApiHTTPError
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.models import ImageFormat
from airflow_provider_searchapi.retry import INTERACTIVE_RETRY_POLICY, RetryPolicy
from tests.conftest import make_jpeg, make_png


@pytest.mark.parametrize("credential", ["authorized_key", "api_key", "iam_token", "metadata"])
def test_search_with_each_credential(make_hook, searchapi_emulator, jpeg, credential):
    hook = make_hook(credential)
    result = hook.search_by_image(image=jpeg)
    assert len(result.images) == searchapi_emulator.settings.images_per_page
    assert result.page == 0 and result.cbir_id
    assert all(image.url.startswith(f"{searchapi_emulator.url}/img/") for image in result.images)
    assert {image.format for image in result.images} <= set(ImageFormat)
    kind = "Api-Key" if credential == "api_key" else "Bearer"
    assert searchapi_emulator.stats.authorization_headers[kind] == 1


def test_same_image_same_results_other_image_other_results(make_hook, jpeg):
    hook = make_hook()
    first, again = hook.search_by_image(image=jpeg), hook.search_by_image(image=jpeg)
    other = hook.search_by_image(image=make_png(5))
    assert first == again
    assert first.cbir_id != other.cbir_id and first.images[0].url != other.images[0].url


def test_iter_pages_sends_the_image_once_then_the_cbir_id(make_hook, searchapi_emulator):
    searchapi_emulator.settings.max_result_pages = 4
    hook = make_hook()
    image = next(make_jpeg(seed) for seed in range(100) if _pages_for(hook, make_jpeg(seed)) == 4)
    searchapi_emulator.stats.reset()
    pages = list(hook.iter_pages(image=image))
    assert [p.page for p in pages] == [0, 1, 2, 3]
    assert len({p.cbir_id for p in pages}) == 1
    stats = searchapi_emulator.stats.snapshot()
    assert stats["uploads"] == 1
    assert stats["search_requests"] == 5  # 4 pages with results, then the empty one that ends it


def _pages_for(hook: SearchApiHook, image: bytes) -> int:
    return (hook.search_by_image(image=image).max_page or 0) + 1


def test_iter_pages_respects_max_pages(make_hook, searchapi_emulator, jpeg):
    searchapi_emulator.settings.max_result_pages = 1
    hook = make_hook()
    assert len(list(hook.iter_pages(image=jpeg, max_pages=5))) == 1
    searchapi_emulator.settings.max_result_pages = 10
    assert len(list(hook.iter_pages(image=make_jpeg(3), max_pages=1))) == 1


async def test_a_bad_max_pages_is_refused_before_any_request(make_hook, searchapi_emulator, jpeg):
    hook = make_hook()
    with pytest.raises(ValueError, match=r"max_pages must be >= 1 \(got 0\)"):
        list(hook.iter_pages(image=jpeg, max_pages=0))
    with pytest.raises(ValueError, match=r"max_pages must be >= 1 \(got -1\)"):
        [page async for page in hook.aiter_pages(image=jpeg, max_pages=-1)]
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_expired_cbir_id_falls_back_to_the_image(make_hook, searchapi_emulator):
    hook = make_hook()
    image = next(make_jpeg(s) for s in range(100) if _pages_for(hook, make_jpeg(s)) >= 2)
    searchapi_emulator.settings.cbir_ttl = 0  # every CBIR id has expired by the next request
    searchapi_emulator.stats.reset()
    pages = list(hook.iter_pages(image=image, max_pages=2))
    assert len(pages) == 2
    assert searchapi_emulator.stats.snapshot()["uploads"] == 2


@pytest.mark.parametrize("use_async", [False, True])
async def test_after_a_fallback_later_pages_follow_the_new_cbir_id(
    make_hook, searchapi_emulator, monkeypatch, use_async
):
    """The image sent again when its CBIR id expired comes back with a new id: the pages after use
    that one, not the expired one (a 404 and an upload more for every page)."""
    searchapi_emulator.settings.max_result_pages = 4
    hook = make_hook()
    image = next(make_jpeg(s) for s in range(100) if _pages_for(hook, make_jpeg(s)) == 4)
    pages = hook.aiter_pages(image=image) if use_async else _as_async(hook.iter_pages(image=image))
    first = await anext(pages)
    emulator, answer = searchapi_emulator, searchapi_emulator._results

    def answer_with_a_new_id(query, page, site):  # ids issued from now on differ from the first
        body = answer(query, page, site)
        del emulator._cbir[body["id"]]
        body["id"] += "-renewed"
        emulator._cbir[body["id"]] = (query, 0.0)
        return body

    emulator._cbir.clear()  # the first id has expired
    monkeypatch.setattr(emulator, "_results", answer_with_a_new_id)
    emulator.stats.reset()
    later = [page async for page in pages]
    assert [p.page for p in [first, *later]] == [0, 1, 2, 3]
    stats = emulator.stats.snapshot()
    assert stats["responses"] == {"404": 1, "200": 4} and stats["uploads"] == 1


async def _as_async(pages):
    for page in pages:
        yield page


def test_url_and_cbir_queries(make_hook):
    hook = make_hook()
    by_url = hook.search_by_image(url="https://example.com/cat.jpg")
    by_id = hook.search_by_image(cbir_id=by_url.cbir_id, page=0)
    assert by_url.images == by_id.images
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(cbir_id="999/unknown")
    assert info.value.status == 404 and info.value.request_id


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"hello, this is text", "not a JPEG"),
        (b"\xff\xd8\xff" + b"\0" * (3 * 1024 * 1024), "over the API's limit"),
    ],
)
def test_bad_images_are_refused_before_any_request(make_hook, searchapi_emulator, data, words):
    hook = make_hook()
    with pytest.raises(InvalidImageError, match=words):
        hook.search_by_image(image=data)
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_one_of_is_checked_before_any_request(make_hook, searchapi_emulator, jpeg):
    hook = make_hook()
    with pytest.raises(SearchApiError, match="exactly one of"):
        hook.search_by_image(image=jpeg, url="https://x/y.jpg")
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_truncated_jpeg_is_a_400_with_the_api_message(make_hook, jpeg):
    hook = make_hook()
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=jpeg[:-20])  # cut in the pixels: the header check lets it through
    assert info.value.status == 400 and "could not be decoded" in info.value.message


async def test_async_twins_reuse_their_connections(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update({"latency": 0.05})
    hook = make_hook(requests_per_second=1000)
    await hook.aget_config()
    images = [make_jpeg(seed) for seed in range(20)]
    results = await asyncio.gather(*(hook.asearch_by_image(image=image) for image in images))
    assert len({r.cbir_id for r in results}) == 20
    opened = searchapi_emulator.stats.snapshot()["rest_connections"]
    assert searchapi_emulator.stats.snapshot()["max_in_flight"] >= 10 and 10 <= opened <= 20
    pages = [p async for p in hook.aiter_pages(image=images[0], max_pages=2)]
    assert 1 <= len(pages) <= 2
    for image in images[:5]:  # one at a time: on connections already open
        await hook.asearch_by_image(image=image)
    assert searchapi_emulator.stats.snapshot()["rest_connections"] == opened
    await hook.aclose()
    await hook.asearch_by_image(image=images[1])  # after closing, a new connection on demand
    await hook.aclose()
    stats = searchapi_emulator.stats.snapshot()
    assert stats["rest_connections"] == opened + 1
    assert stats["token_exchanges"] == 1


async def test_async_connections_are_bounded(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update({"latency": 0.05})
    hook = make_hook(requests_per_second=1000, hook_kwargs={"max_connections": 4})
    await hook.aget_config()
    results = await asyncio.gather(*(hook.asearch_by_image(url=f"https://x/{n}.jpg") for n in range(24)))
    await hook.aclose()
    stats = searchapi_emulator.stats.snapshot()
    assert len(results) == 24 and stats["search_requests"] == 24
    assert stats["max_in_flight"] == 4 and stats["rest_connections"] == 4


def test_test_connection_success(make_hook):
    ok, message = make_hook().test_connection()
    assert ok, message
    assert "authorized_key credential accepted" in message


def test_test_connection_wrong_folder(make_hook):
    ok, message = make_hook("api_key", folder_id="b1gwrongfolder").test_connection()
    assert not ok
    assert "403" in message and "folder_id" in message


def test_a_folder_id_argument_the_connection_overrides_is_warned_about(make_hook, searchapi_emulator, caplog, capsys):
    hook = make_hook("api_key", hook_kwargs={"folder_id": "b1gotherfolder"})
    with caplog.at_level(logging.WARNING):  # Airflow's logging prints it, or hands it on to the root logger
        assert hook.config.folder_id == searchapi_emulator.folder_id  # the connection's wins, as documented
    logged = capsys.readouterr().out + "".join(record.getMessage() for record in caplog.records)
    warning = f"folder_id='b1gotherfolder' is ignored: connection searchapi_test bills folder {hook.config.folder_id}"
    assert logged.count(warning) == 1


def test_test_connection_key_unknown_to_iam(make_hook, searchapi_emulator):
    hook = make_hook()
    searchapi_emulator._public_keys.clear()
    ok, message = hook.test_connection()
    assert not ok
    assert "refused the authorized key" in message and "401" in message
    assert "PRIVATE KEY" not in message


def test_test_connection_unreachable_endpoint(make_hook):
    hook = make_hook(
        "api_key", endpoint="http://127.0.0.1:9", retry_policy=RetryPolicy(max_attempts=2, backoff_base=0.01)
    )
    ok, message = hook.test_connection()
    assert not ok
    assert "connection failed" in message and "reachable" in message


def test_test_connection_answers_within_seconds_when_the_api_keeps_failing(make_hook, searchapi_emulator):
    """Airflow's Test button builds the hook with no retry policy: the probe must not retry for minutes
    as a task would (8 attempts, up to 600 s), while the user waits for the answer."""
    hook = make_hook("api_key", retry_policy=None)  # as Connection.get_hook() builds it
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["503"], "fault_attempts": 1000})
    started = time.monotonic()
    ok, message = hook.test_connection()
    assert not ok and "503" in message, message
    assert searchapi_emulator.stats.snapshot()["search_requests"] == INTERACTIVE_RETRY_POLICY.max_attempts
    assert time.monotonic() - started < INTERACTIVE_RETRY_POLICY.max_total_seconds


def test_test_connection_bad_key_json(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BROKEN",
        '{"conn_type": "yandex_searchapi", "extra": {"folder_id": "f", "service_account_json": "{oops"}}',
    )
    ok, message = SearchApiHook("broken").test_connection()
    assert not ok
    assert "service_account_json" in message and "not valid JSON" in message


def test_no_network_in_init(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOWHERE",
        '{"conn_type": "yandex_searchapi", "extra": {"folder_id": "f", "api_key": "AQVN-abc", "endpoint": "http://127.0.0.1:9"}}',
    )
    hook = SearchApiHook("nowhere")
    assert "config" not in hook.__dict__
