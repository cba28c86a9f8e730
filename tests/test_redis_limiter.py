"""The Redis limiter's own logic, on fakeredis (one fake server seen by every client, as processes would
see one Redis), and its fallback when no Redis answers. Real Redis: tests/test_shared_quota.py."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest

fakeredis = pytest.importorskip("fakeredis", reason="LOUD SKIP: fakeredis is not installed (the test extra)")
pytest.importorskip("lupa", reason="LOUD SKIP: lupa (fakeredis[lua]) is not installed (the test extra)")

from airflow_provider_searchapi.exceptions import SearchApiConfigError  # noqa: E402
from airflow_provider_searchapi.ratelimit import RateLimiter  # noqa: E402
from airflow_provider_searchapi.redis_limiter import RedisRateLimiter, redis_client_settings  # noqa: E402
from tests.airflow_env import free_port  # noqa: E402
from tests.conftest import max_in_window  # noqa: E402


@pytest.fixture
def fake_redis(monkeypatch):
    """Every Redis client made from now on talks to one fake server."""
    import fakeredis.aioredis
    import redis
    import redis.asyncio

    server = fakeredis.FakeServer()
    monkeypatch.setenv("AIRFLOW_CONN_FAKE_REDIS", json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": 1}))
    monkeypatch.setattr(redis, "Redis", lambda **kw: fakeredis.FakeRedis(server=server))
    monkeypatch.setattr(redis.asyncio, "Redis", lambda **kw: fakeredis.aioredis.FakeRedis(server=server))
    return "fake_redis"


def _limiter(conn_id: str, folder: str = "b1gfolder", rate: float = 20.0) -> RedisRateLimiter:
    return RedisRateLimiter(conn_id, folder, rate, RateLimiter(rate))


def test_the_redis_connection_is_read_by_the_redis_provider(monkeypatch):
    conn = {"conn_type": "redis", "host": "redis.internal", "port": 6380, "password": "s3cret", "extra": {"db": 3}}
    monkeypatch.setenv("AIRFLOW_CONN_LIMITS", json.dumps(conn))
    settings = redis_client_settings("limits")
    assert {k: settings[k] for k in ("host", "port", "db", "password")} == {
        "host": "redis.internal",
        "port": 6380,
        "db": 3,
        "password": "s3cret",
    }
    assert settings["socket_timeout"] and settings["socket_connect_timeout"]  # never hang on a lost Redis
    assert "ssl" not in settings
    conn["extra"] = {"ssl": True, "ssl_cert_reqs": "none"}
    monkeypatch.setenv("AIRFLOW_CONN_LIMITS", json.dumps(conn))
    assert redis_client_settings("limits")["ssl"] is True
    assert redis_client_settings("limits")["ssl_cert_reqs"] == "none"


def test_a_missing_redis_connection_is_an_error_naming_it():
    with pytest.raises(Exception, match="no_such_redis"):
        redis_client_settings("no_such_redis")


@pytest.mark.serial  # measures time
def test_two_processes_on_one_folder_share_one_rate(fake_redis):
    rate, starts, lock = 20.0, [], threading.Lock()
    processes = [_limiter(fake_redis, rate=rate) for _ in range(2)]  # two limiters: as two processes

    def work(limiter: RedisRateLimiter) -> None:
        for _ in range(10):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=work, args=(limiter,)) for limiter in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Evenly spaced: never more than a quarter second's share in a quarter second (a thread may note
    # its start late, so two noted starts can come close; the window allows one such).
    assert max_in_window(starts, 0.25) <= rate / 4 + 1
    assert max(starts) - min(starts) >= 19 / rate * 0.95


@pytest.mark.serial  # measures time
def test_other_folders_have_their_own_rate(fake_redis):
    first, other = _limiter(fake_redis, "b1gfirst", rate=2), _limiter(fake_redis, "b1gother", rate=2)
    started = time.monotonic()
    first.acquire()
    other.acquire()
    assert time.monotonic() - started < 0.25  # the other folder did not wait for the first one's slot


@pytest.mark.serial  # measures time
def test_async_callers_share_the_rate_with_sync_ones(fake_redis):
    rate = 20.0
    limiter, other_process = _limiter(fake_redis, rate=rate), _limiter(fake_redis, rate=rate)

    async def run() -> list[float]:
        async def one() -> float:
            await limiter.aacquire()
            return time.monotonic()

        starts = await asyncio.gather(*(one() for _ in range(8)), asyncio.to_thread(_sync_starts, other_process, 4))
        await limiter.aclose()
        return sorted([*starts[:8], *starts[8]])

    starts = asyncio.run(run())
    assert len(starts) == 12
    assert max_in_window(starts, 0.25) <= rate / 4 + 1
    assert max(starts) - min(starts) >= 11 / rate * 0.95


def test_async_callers_on_one_loop_share_one_client_and_a_cancelled_one_harms_none(redis_conn_id, monkeypatch):
    import redis.asyncio

    opened = []
    make_client = redis.asyncio.Redis
    monkeypatch.setattr(redis.asyncio, "Redis", lambda **kw: opened.append(kw) or make_client(**kw))
    limiter = _limiter(redis_conn_id, rate=1000)

    async def run() -> None:
        cancelled = asyncio.create_task(limiter.aacquire())
        await asyncio.sleep(0)  # it waits for the client being opened
        cancelled.cancel()
        await asyncio.gather(*(limiter.aacquire() for _ in range(8)))
        await limiter.aclose()

    asyncio.run(run())
    assert len(opened) == 1
    assert limiter._down_since is None  # Redis was used throughout, not the fallback


def test_closing_after_a_failed_opening_whose_caller_was_cancelled_raises_nothing(monkeypatch):
    # A run that fails cancels its workers; closing the hook must not replace the run's error by Redis's.
    conn = {"conn_type": "redis", "host": "127.0.0.1", "port": free_port()}
    monkeypatch.setenv("AIRFLOW_CONN_GONE_REDIS", json.dumps(conn))
    limiter = _limiter("gone_redis", rate=20)

    async def run() -> None:
        waiting = asyncio.create_task(limiter.aacquire())
        await asyncio.sleep(0)  # it waits for the client being opened
        waiting.cancel()
        await asyncio.sleep(0.5)  # the opening fails (nothing listens there)
        await limiter.aclose()

    asyncio.run(run())


def _sync_starts(limiter: RedisRateLimiter, count: int) -> list[float]:
    starts = []
    for _ in range(count):
        limiter.acquire()
        starts.append(time.monotonic())
    return starts


@pytest.mark.serial  # measures time
def test_without_redis_the_process_goes_on_with_its_own_limit_and_warns_once(monkeypatch, caplog):
    conn = {"conn_type": "redis", "host": "127.0.0.1", "port": free_port()}
    monkeypatch.setenv("AIRFLOW_CONN_GONE_REDIS", json.dumps(conn))
    rate = 20.0
    limiter = _limiter("gone_redis", rate=rate)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_searchapi.redis_limiter"):
        for _ in range(5):
            limiter.acquire()

        async def more() -> None:
            for _ in range(5):
                await limiter.aacquire()

        asyncio.run(more())
    elapsed = time.monotonic() - started
    assert 9 / rate * 0.95 <= elapsed < 5  # held to the rate by the local limiter, without waiting on Redis
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "gone_redis" in warnings[0] and "searchapi:rate:b1gfolder" in warnings[0]


def test_a_redis_cluster_connection_is_refused(monkeypatch):
    conn = {"conn_type": "redis", "host": "127.0.0.1", "port": 7000, "extra": {"cluster": True}}
    monkeypatch.setenv("AIRFLOW_CONN_CLUSTER", json.dumps(conn))
    with pytest.raises(SearchApiConfigError, match="rate_limit_conn_id"):
        redis_client_settings("cluster")


def test_the_hook_uses_the_connections_redis_limit_unless_told_otherwise(make_hook, fake_redis):
    from tests.conftest import make_jpeg

    hook = make_hook("api_key", rate_limit_conn_id=fake_redis)
    assert isinstance(hook.limiter, RedisRateLimiter) and hook.limiter.key == f"searchapi:rate:{hook.config.folder_id}"
    assert hook.search_by_image(image=make_jpeg(1)).images
    assert asyncio.run(hook.asearch_by_image(image=make_jpeg(2))).images
    without = make_hook(
        "api_key", conn_id="searchapi_other", rate_limit_conn_id=fake_redis, hook_kwargs={"rate_limit_conn_id": ""}
    )
    assert isinstance(without.limiter, RateLimiter)


def test_hooks_of_a_folder_asking_other_rates_share_one_redis_limiter_and_its_hold(make_hook, fake_redis):
    # As without Redis, the first rate wins: a second limiter, at another rate, would not hold its starts
    # during the Retry-After the first one saw.
    first = make_hook("api_key", requests_per_second=20, rate_limit_conn_id=fake_redis)
    second = make_hook("api_key", conn_id="searchapi_other", requests_per_second=5, rate_limit_conn_id=fake_redis)
    first.limiter.throttled(0.3)
    started = time.monotonic()
    second.limiter.acquire()
    assert time.monotonic() - started >= 0.25


@pytest.mark.serial
@pytest.mark.parametrize("shared", [True, False], ids=["redis", "local"])
def test_after_a_429_no_start_comes_before_retry_after(make_hook, searchapi_emulator, fake_redis, shared):
    from tests.conftest import make_jpeg

    # A quota lower than the client's rate: one start a second, and a 429 asks to wait 1 s.
    searchapi_emulator.settings.update({"quota_rps": 1.0, "retry_after": 1.0})
    hook = make_hook("api_key", requests_per_second=20, rate_limit_conn_id=fake_redis if shared else None)
    assert isinstance(hook.limiter, RedisRateLimiter) is shared
    hook.search_by_image(image=make_jpeg(1))
    hook.search_by_image(image=make_jpeg(2))  # refused once, then sent again only after Retry-After
    assert searchapi_emulator.stats.snapshot()["responses"] == {"200": 2, "429": 1}
