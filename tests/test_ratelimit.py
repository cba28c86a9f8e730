"""The client never exceeds requests_per_second, whatever the concurrency."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from airflow_provider_searchapi.ratelimit import RateLimiter, shared_rate_limiter
from tests.conftest import make_jpeg, max_in_window


@pytest.mark.serial  # measures time
def test_starts_are_spaced_by_the_interval_across_threads():
    rate = 25
    limiter = RateLimiter(rate)
    starts: list[float] = []
    lock = threading.Lock()

    def work():
        for _ in range(5):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 40
    # Slots are 1/rate apart; a busy machine may note a start late, never early.
    assert max(starts) - min(starts) >= 39 / rate * 0.98
    assert max_in_window(starts) <= rate + 1


def test_invalid_rates_are_refused():
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(5, decrease=1)


def test_limiters_are_shared_per_name_and_rate():
    assert shared_rate_limiter("conn-a", 10) is shared_rate_limiter("conn-a", 10)
    assert shared_rate_limiter("conn-a", 10) is not shared_rate_limiter("conn-b", 10)


@pytest.mark.serial  # measures time
def test_64_concurrent_callers_stay_within_the_limit_at_the_server(make_hook, searchapi_emulator):
    rate = 20.0
    searchapi_emulator.settings.quota_rps = rate  # the server would answer 429 past the quota
    hook = make_hook("api_key", requests_per_second=rate)
    images = [make_jpeg(seed) for seed in range(64)]

    async def run():
        started = time.monotonic()
        await asyncio.gather(*(hook.asearch_by_image(image=image) for image in images))
        await hook.aclose()
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    arrivals = list(searchapi_emulator.stats.arrivals)
    stats = searchapi_emulator.stats.snapshot()
    assert stats["responses"] == {"200": 64}  # not one 429
    # Starts leave the client 1/rate apart; on arrival, jitter may squeeze more into a one-second
    # window: the first request also opens the connection, so it can arrive late, and the client's
    # loop may stall between a start and its send. The server's quota allows a second's burst.
    assert max_in_window(arrivals) <= rate + 2
    measured = (len(arrivals) - 1) / (max(arrivals) - min(arrivals))
    assert measured <= rate * 1.02
    assert elapsed >= (64 - 1) / rate * 0.98


def test_a_stalled_event_loop_does_not_send_the_starts_it_delayed_together():
    rate = 20
    limiter = RateLimiter(rate)
    starts: list[float] = []

    async def caller():
        await limiter.aacquire()
        starts.append(time.monotonic())

    async def stall():
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # nothing else runs on the loop meanwhile

    async def run():
        await asyncio.gather(stall(), *(caller() for _ in range(12)))

    asyncio.run(run())
    assert len(starts) == 12
    # A start may use its slot until one slot late, so any 10 ms hold the starts of two slots at most,
    # however long the stall (without that rule, the slots that fell due in it would start at once).
    assert max_in_window(starts, window=0.01) <= 2


@pytest.mark.serial  # measures time
def test_callers_that_always_wake_late_still_start_at_the_loops_pace():
    # A loop that stalls 15 ms at each turn wakes every sleeper a slot (10 ms at 100/s) or more late.
    # Were each late caller sent to the back of the queue, behind slots the others will miss too, the
    # starts would all but stop (3/s); one start per turn of the loop is what it can do.
    rate = 100
    limiter = RateLimiter(rate)
    starts: list[float] = []
    stop = time.monotonic() + 1.0

    async def busy_loop():
        while time.monotonic() < stop:
            time.sleep(0.015)
            await asyncio.sleep(0)

    async def caller():
        while time.monotonic() < stop:
            await limiter.aacquire()
            starts.append(time.monotonic())

    async def run():
        await asyncio.gather(busy_loop(), *(caller() for _ in range(5)))

    asyncio.run(run())
    assert 30 <= len(starts) <= rate + 5
    assert max_in_window(starts) <= rate + 1
    # A late start comes a slot's length after the last start, so it adds one at most to a slot's starts.
    assert max_in_window(starts, window=1 / rate) <= 3


@pytest.mark.serial  # measures time
def test_adaptive_limiter_slows_once_per_burst_of_429s_and_climbs_back(caplog):
    limiter = RateLimiter(10, recovery=0.5)  # +5 requests/s per second without 429
    with caplog.at_level("INFO", logger="airflow_provider_searchapi.ratelimit"):
        limiter.throttled(None)
        limiter.throttled(None)  # the same burst: counted once
        assert limiter.rate == pytest.approx(7)
        time.sleep(0.3)
        limiter.acquire()
        assert 7.5 < limiter.rate < 10  # climbing back
        time.sleep(0.5)
        limiter.acquire()
        assert limiter.rate == 10
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2  # one line when it slowed, one when back at the configured rate
    assert "slows to 7 requests/s" in messages[0] and "back to the configured 10" in messages[1]


def test_a_later_429_of_the_same_burst_holds_the_slots_already_taken():
    limiter = RateLimiter(50)
    limiter.throttled(None)  # the burst's first 429: the rate drops to 35/s
    starts: list[float] = []

    async def caller():
        await limiter.aacquire()
        starts.append(time.monotonic())

    async def run():
        callers = [asyncio.create_task(caller()) for _ in range(12)]
        await asyncio.sleep(0.05)  # some have started; the next ones hold slots within the horizon
        limiter.throttled(0.5)  # another 429 of the burst, with Retry-After
        held = time.monotonic()
        await asyncio.gather(*callers)
        return held

    held = asyncio.run(run())
    assert len(starts) == 12
    assert not [start for start in starts if held < start < held + 0.45]  # none within its Retry-After


@pytest.mark.serial  # measures time
def test_retry_after_holds_every_start_of_the_process():
    limiter = RateLimiter(100)
    limiter.acquire()
    limiter.throttled(0.5)
    started = time.monotonic()
    limiter.acquire()
    asyncio.run(limiter.aacquire())
    assert time.monotonic() - started >= 0.45
