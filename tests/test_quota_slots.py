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
