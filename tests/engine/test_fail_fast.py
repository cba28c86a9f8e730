"""A run whose setup is wrong stops within a few requests and says why; image-level refusals never stop it."""

from __future__ import annotations

import pytest

from airflow_provider_searchapi.engine import Enricher, EnrichmentSettings, XComSink, images_from_urls
from airflow_provider_searchapi.exceptions import SearchApiAuthError, SearchApiSetupError
from airflow_provider_searchapi.retry import RetryPolicy

URLS = [f"https://example.com/{n}.jpg" for n in range(300)]


def test_a_wrong_folder_stops_the_run_within_20_requests(make_hook, searchapi_emulator):
    hook = make_hook("api_key", folder_id="b1gwrongfolder", requests_per_second=1000)
    sink = XComSink()
    enricher = Enricher(hook, [sink], EnrichmentSettings(max_concurrency=16))
    with pytest.raises(SearchApiSetupError) as info:
        enricher.run(images_from_urls(URLS))
    message = str(info.value)
    assert "403" in message and "Permission denied to folder 'b1gwrongfolder'" in message
    assert "folder b1gwrongfolder" in message and searchapi_emulator.url in message
    assert info.value.cause.status == 403
    requests = searchapi_emulator.stats.snapshot()["search_requests"]
    assert 5 <= requests <= 20
    # what finished is committed: one error row per image that was answered
    assert len(sink.errors) >= 5 and all(row["http_status"] == 403 for row in sink.errors)
    assert enricher.summary.failure_causes == {
        "Search API 403: Permission denied to folder 'b1gwrongfolder'.": enricher.summary.failed
    }


def test_an_unreachable_iam_endpoint_stops_the_run_naming_it(make_hook, searchapi_emulator):
    fast = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02)
    hook = make_hook("authorized_key", iam_endpoint="http://127.0.0.1:9/iam/v1/tokens", retry_policy=fast)
    with pytest.raises(SearchApiSetupError) as info:
        Enricher(hook, [XComSink()], EnrichmentSettings(max_concurrency=4)).run(images_from_urls(URLS))
    assert isinstance(info.value.cause, SearchApiAuthError)
    assert "could not reach the IAM endpoint http://127.0.0.1:9/iam/v1/tokens" in str(info.value)
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 0


def test_image_refusals_never_stop_a_run_and_failures_group_by_cause(make_hook, searchapi_emulator, tmp_path):
    from tests.conftest import make_jpeg

    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(8):
        (folder / f"{n}.jpg").write_bytes(make_jpeg(n)[:-20])  # the service cannot decode them: 400 each
    (folder / "empty.jpg").write_bytes(b"")
    from airflow_provider_searchapi.engine import list_images

    hook = make_hook("api_key", requests_per_second=1000)
    summary = Enricher(hook, [XComSink()]).run(list_images(f"file://{folder}/"))
    assert summary.failed == 9 and summary.searched == 0
    assert summary.failure_causes["invalid image: the file is empty (0 bytes)"] == 1
    assert [n for cause, n in summary.failure_causes.items() if cause.startswith("Search API 400")] == [8]
    assert "8 × Search API 400" in summary.top_causes()
