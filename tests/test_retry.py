"""Which failures are retried, how many times, and how long the client waits."""

from __future__ import annotations

import asyncio
import json

import pytest
from tenacity import RetryCallState, Retrying

from airflow_provider_searchapi.exceptions import SearchApiHTTPError
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.ratelimit import RateLimiter
from airflow_provider_searchapi.retry import Caller, CallStats, RetryPolicy, is_retryable, wait_retry_after
from tests.conftest import make_jpeg


@pytest.mark.parametrize("kind", ["429", "429-no-retry-after", "500", "503", "504", "drop"])
def test_transient_faults_are_retried_until_success(make_hook, searchapi_emulator, kind):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": [kind], "fault_attempts": 2})
    hook = make_hook("api_key")
    result = hook.search_by_image(image=make_jpeg(7))
    assert result.images
    stats = searchapi_emulator.stats.snapshot()
    assert stats["search_requests"] == 3  # two injected faults, then the answer
    assert stats["faults"] == {kind: 2}


def test_a_stalled_answer_times_out_and_is_retried(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["stall"], "stall_seconds": 1.5})
    hook = make_hook("api_key", timeout=0.5)
    assert hook.search_by_image(image=make_jpeg(8)).images
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 2


@pytest.mark.parametrize(
    "extras, image, status",
    [
        ({"folder_id": "b1gotherfolder"}, make_jpeg(1), 403),
        ({}, make_jpeg(1)[:-20], 400),
    ],
)
def test_permanent_errors_are_not_retried(make_hook, searchapi_emulator, extras, image, status):
    hook = make_hook("api_key", **extras)
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=image)
    assert info.value.status == status
    assert info.value.request_id  # from the error body's RequestInfo
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 1


def test_404_is_not_retried(make_hook, searchapi_emulator):
    hook = make_hook("api_key")
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(cbir_id="1/unknown")
    assert info.value.status == 404
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 1


def test_retries_are_bounded(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["503"], "fault_attempts": 100})
    hook = make_hook("api_key", retry_policy=RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.02))
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=make_jpeg(9))
    assert info.value.status == 503 and info.value.grpc_code == 14
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 4


@pytest.mark.parametrize("path", ["sync", "async"])
def test_the_time_bound_counts_from_the_first_attempt(make_hook, searchapi_emulator, path):
    """A first attempt that outlasts ``max_total_seconds`` (a timeout) is not retried."""
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["stall"], "stall_seconds": 1.5})
    hook = make_hook("api_key", timeout=0.5, retry_policy=RetryPolicy(max_total_seconds=0.3, backoff_max=0.01))
    with pytest.raises(SearchApiHTTPError) as info:
        if path == "sync":
            hook.search_by_image(image=make_jpeg(10))
        else:
            asyncio.run(hook.asearch_by_image(image=make_jpeg(10)))
    assert info.value.status == 0 and "no answer within 0.5 s" in str(info.value)
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 1


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_failed_first_attempt_is_retried_as_attempt_one(make_hook, searchapi_emulator, path, caplog):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["503"], "fault_attempts": 2})
    hook = make_hook("api_key", retry_policy=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02))
    with caplog.at_level("WARNING", logger="airflow_provider_searchapi.retry"):
        if path == "sync":
            assert hook.search_by_image(image=make_jpeg(11)).images
        else:
            assert asyncio.run(hook.asearch_by_image(image=make_jpeg(11))).images
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert [m.split("; ")[1].split(" failed")[0] for m in retries] == ["attempt 1", "attempt 2"]
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 3
    assert hook.stats.attempts == 3 and hook.stats.failures == {503: 2}


def test_quota_429_honours_retry_after(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update({"quota_rps": 1.0, "retry_after": 0.4})
    hook = make_hook("api_key", requests_per_second=1000)  # a client that ignores the quota
    hook.search_by_image(image=make_jpeg(1))
    with pytest.raises(SearchApiHTTPError) as info:
        hook.transport._send(hook._request(image=make_jpeg(2)).encode(), hook.auth.header)
    assert info.value.status == 429 and info.value.retry_after == pytest.approx(0.4)


@pytest.fixture(params=["rest", "grpc"])
def hook_with_three_attempts(request, searchapi_emulator, monkeypatch):
    if request.param == "grpc":
        pytest.importorskip("grpc", reason="LOUD SKIP: grpcio is not installed")
    extras = searchapi_emulator.connection_extras(credential="api_key", transport=request.param)
    conn = json.dumps({"conn_type": "yandex_searchapi", "extra": {**extras, "requests_per_second": 1000}})
    monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_THREE", conn)
    hook = SearchApiHook(
        "searchapi_three", retry_policy=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02)
    )
    yield hook
    hook.close()


def test_every_call_gets_its_own_attempts(hook_with_three_attempts, searchapi_emulator):
    """Each call starts at attempt one, so two faults then an answer fit in three attempts call after
    call, one at a time and many at once."""
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["503"], "fault_attempts": 2})
    hook = hook_with_three_attempts
    for seed in range(3):
        assert hook.search_by_image(image=make_jpeg(100 + seed)).images

    async def many_at_once() -> None:
        results = await asyncio.gather(*(hook.asearch_by_image(image=make_jpeg(200 + seed)) for seed in range(12)))
        assert all(result.images for result in results)
        for seed in range(3):  # then one at a time
            assert (await hook.asearch_by_image(image=make_jpeg(300 + seed))).images
        await hook.aclose()

    asyncio.run(many_at_once())
    stats = searchapi_emulator.stats.snapshot()
    assert stats["search_requests"] == 3 * (3 + 12 + 3)
    assert stats["faults"] == {"503": 2 * (3 + 12 + 3)}


def test_a_call_that_runs_out_of_attempts_leaves_the_next_call_its_own(hook_with_three_attempts, searchapi_emulator):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["503"], "fault_attempts": 5})
    hook = hook_with_three_attempts
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=make_jpeg(400))
    assert info.value.status == 503
    searchapi_emulator.settings.update({"fault_attempts": 2})
    assert hook.search_by_image(image=make_jpeg(401)).images
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 3 + 3


def _state_after(err: BaseException, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(err), err, None))
    return state


def test_wait_uses_retry_after_when_given_else_backoff():
    wait = wait_retry_after(fallback=lambda state: 7.0, cap=60)
    assert wait(_state_after(SearchApiHTTPError(429, "slow down", retry_after=2.5))) == 2.5
    assert wait(_state_after(SearchApiHTTPError(429, "slow down", retry_after=600))) == 60
    assert wait(_state_after(SearchApiHTTPError(503, "busy"))) == 7.0


@pytest.mark.parametrize(
    "status, expected",
    [
        (0, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
    ],
)
def test_retryable_statuses(status, expected):
    assert is_retryable(SearchApiHTTPError(status, "x")) is expected


def test_backoff_grows_and_stays_under_the_cap():
    caller = Caller(RateLimiter(1), RetryPolicy(backoff_base=0.5, backoff_max=4), CallStats())
    wait = caller._retrying(Retrying).wait
    waits = [wait(_state_after(SearchApiHTTPError(503, "x"), attempt)) for attempt in range(1, 12) for _ in range(20)]
    assert all(0 <= w <= 4 for w in waits)
    assert max(waits) > 1  # it does grow


def test_429s_do_not_use_up_the_attempts_for_faults(make_hook, searchapi_emulator):
    """Six 429s in a row, with two attempts allowed for faults: the search still succeeds."""
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["429-no-retry-after"], "fault_attempts": 6})
    hook = make_hook("api_key", retry_policy=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02))
    assert hook.search_by_image(image=make_jpeg(500)).images
    assert hook.stats.attempts == 7 and hook.stats.throttled == 6


def test_faults_still_stop_at_max_attempts_after_429s(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["503"], "fault_attempts": 100})
    hook = make_hook("api_key", retry_policy=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02))
    with pytest.raises(SearchApiHTTPError):
        hook.search_by_image(image=make_jpeg(501))
    assert hook.stats.attempts == 2


def test_429s_stop_at_the_time_bound(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update(
        {"fault_rate": 1.0, "fault_kinds": ["429-no-retry-after"], "fault_attempts": 1000}
    )
    policy = RetryPolicy(max_attempts=2, max_total_seconds=0.5, backoff_base=0.01, backoff_max=0.05)
    hook = make_hook("api_key", retry_policy=policy, requests_per_second=1000)
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=make_jpeg(502))
    assert info.value.status == 429 and hook.stats.throttled > 2  # many 429s, then the time bound


async def test_a_far_retry_after_holds_the_process_no_longer_than_a_call_may_last(make_hook, searchapi_emulator):
    # An hour's Retry-After (or an HTTP date read on a clock that lags) must not hold every start of the
    # process for an hour: the limiter holds them no longer than a call may last.
    searchapi_emulator.settings.update({"quota_rps": 1.0, "retry_after": 3600})
    policy = RetryPolicy(backoff_base=0.01, backoff_max=0.05, max_total_seconds=2)
    hook = make_hook("api_key", requests_per_second=1000, retry_policy=policy)
    await hook.asearch_by_image(image=make_jpeg(1))
    result = await asyncio.wait_for(hook.asearch_by_image(image=make_jpeg(2)), timeout=10)
    await hook.aclose()
    assert result.images and hook.stats.throttled >= 1
