"""One rate limit shared by every process and worker that searches with a folder, kept in Redis.

pyrate-limiter's ``RedisBucket`` (its Lua script checks and records a start in one step) under the key
``searchapi:rate:<folder_id>`` allows one start per ``1 / requests_per_second`` seconds, so the starts of
all processes together are evenly spaced, never in bursts.

When Redis cannot be reached, one warning is logged and the process goes on with its own
:class:`~airflow_provider_searchapi.ratelimit.RateLimiter`; Redis is tried again every
``RETRY_REDIS_SECONDS``, and its return is logged too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

from airflow_provider_searchapi.aio import PerEventLoop
from airflow_provider_searchapi.exceptions import SearchApiConfigError
from airflow_provider_searchapi.ratelimit import RateLimiter

log = logging.getLogger(__name__)

#: Seconds to wait for Redis to connect or answer before going on without it.
REDIS_TIMEOUT_SECONDS = 2.0
#: Seconds between tries to reach Redis again after it failed.
RETRY_REDIS_SECONDS = 30.0
#: Seconds between removals of the bucket's past starts (the key would grow otherwise).
LEAK_SECONDS = 10.0

#: What a Redis connection's client carries over to the async client (as the redis provider reads it).
_CLIENT_SETTINGS = ("host", "port", "db", "username", "password")
_SSL_SETTINGS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")


def redis_client_settings(redis_conn_id: str) -> dict[str, Any]:
    """The settings of a ``redis`` connection, read by the redis provider's ``RedisHook``, as keyword
    arguments of ``redis.Redis`` and ``redis.asyncio.Redis`` (with short timeouts added).

    :param redis_conn_id: the Airflow ``redis`` connection (a single server, not a cluster).
    """
    try:
        import pyrate_limiter  # noqa: F401
        import redis
        from airflow.providers.redis.hooks.redis import RedisHook
    except ImportError:
        hint = "needs the redis extra: pip install 'airflow-provider-searchapi[redis]'"
        raise SearchApiConfigError("rate_limit_conn_id", hint) from None
    hook = RedisHook(redis_conn_id)
    if hook.get_connection(redis_conn_id).extra_dejson.get("cluster"):
        raise SearchApiConfigError(
            "rate_limit_conn_id", f"{redis_conn_id!r} is a Redis cluster connection; name a single Redis server"
        )
    pool = hook.get_conn().connection_pool  # a client that connects on its first command
    given = pool.connection_kwargs
    settings = {name: given.get(name) for name in _CLIENT_SETTINGS}
    if issubclass(pool.connection_class, redis.SSLConnection):
        settings.update(ssl=True, **{name: given.get(name) for name in _SSL_SETTINGS})
    return {**settings, "socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}


class RedisRateLimiter:
    """Starts at ``rate`` per second across every process that uses the same Redis and folder.

    Build it with :func:`shared_redis_limiter` (one per process). The Redis clients are made on first
    use, one per event loop for async callers.

    :param redis_conn_id: the Airflow ``redis`` connection.
    :param folder_id: the folder whose quota the limit is (the key in Redis).
    :param rate: starts per second, all processes together (at most 1,000).
    :param fallback: the limiter used while Redis cannot be reached; also told about 429s.
    """

    def __init__(self, redis_conn_id: str, folder_id: str, rate: float, fallback: RateLimiter) -> None:
        from pyrate_limiter import Rate

        self.redis_conn_id = redis_conn_id
        self.key = f"searchapi:rate:{folder_id}"
        self.fallback = fallback
        self._rate = Rate(1, max(1, math.ceil(1000 / rate)))  # one start per interval, in ms
        self._settings = redis_client_settings(redis_conn_id)
        self._lock = threading.Lock()
        self._sync: Any = None  # (pyrate Limiter, bucket)
        # A task per event loop that opens its client once, however many callers wait for it.
        self._async: PerEventLoop[asyncio.Task[Any]] = PerEventLoop(lambda: asyncio.create_task(self._open_async()))
        self._down_since: float | None = None
        self._leaked = 0.0
        self._held_until = 0.0  # no start of this process before then (``time.monotonic()``): a Retry-After

    def acquire(self) -> None:
        """Block the calling thread until it may start a request."""
        if (held := self._held_until - time.monotonic()) > 0:
            time.sleep(held)
        if self._redis_usable():
            try:
                limiter, bucket = self._sync_limiter()
                if self._due_leak():
                    bucket.leak(bucket.now())
                if limiter.try_acquire(self.key):
                    return self._up()
            except Exception as err:  # noqa: BLE001 - any Redis failure: go on without it
                self._down(err)
        self.fallback.acquire()

    async def aacquire(self) -> None:
        """Wait, without blocking the event loop, until the caller may start a request."""
        if (held := self._held_until - time.monotonic()) > 0:
            await asyncio.sleep(held)
        if self._redis_usable():
            try:
                # Shielded: a caller cancelled meanwhile must not cancel the opening for the others.
                limiter, bucket, _ = await asyncio.shield(self._async.get())
                if self._due_leak():
                    await bucket.leak(bucket.now())
                if await limiter.try_acquire_async(self.key):
                    return self._up()
            except Exception as err:  # noqa: BLE001 - any Redis failure: go on without it
                self._down(err)
        await self.fallback.aacquire()

    def throttled(self, retry_after: float | None) -> None:
        """A 429 came: this process starts nothing until ``retry_after`` seconds passed, and the fallback
        limiter slows down (with Redis up, the shared rate stays)."""
        self._held_until = max(self._held_until, time.monotonic() + (retry_after or 0.0))
        self.fallback.throttled(retry_after)

    async def aclose(self) -> None:
        """Close the running event loop's Redis client (a later call makes a new one)."""
        opening = self._async.pop()
        if opening is not None:
            try:
                _, _, client = await opening
            except Exception:  # noqa: BLE001 - it never opened (its callers went on without Redis)
                return
            await client.aclose()

    def _sync_limiter(self) -> Any:
        with self._lock:
            if self._sync is None:
                import redis
                from pyrate_limiter import RedisBucket
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                client = redis.Redis(**self._settings, retry=Retry(NoBackoff(), 1))
                bucket = RedisBucket.init([self._rate], client, self.key)
                self._sync = (_limiter(bucket), bucket)
            return self._sync

    async def _open_async(self) -> tuple[Any, Any, Any]:
        import redis.asyncio
        from pyrate_limiter import RedisBucket
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # One quick retry: a lost Redis must cost a moment, not redis-py's default backoff.
        client = redis.asyncio.Redis(**self._settings, retry=Retry(NoBackoff(), 1))
        bucket = await RedisBucket.init([self._rate], client, self.key)
        return _limiter(bucket), bucket, client

    def _due_leak(self) -> bool:
        """Whether this process should now drop the bucket's past starts."""
        now = time.monotonic()
        if now - self._leaked < LEAK_SECONDS:
            return False
        self._leaked = now
        return True

    def _redis_usable(self) -> bool:
        return self._down_since is None or time.monotonic() - self._down_since >= RETRY_REDIS_SECONDS

    def _down(self, err: Exception) -> None:
        with self._lock:
            first = self._down_since is None
            self._down_since = time.monotonic()
            self._sync = None  # a restarted Redis has lost the bucket's script: make new clients
            self._async.clear()
        if first:
            log.warning(
                "The shared rate limit in Redis (connection %r, key %s) cannot be used (%s: %s); this process "
                "goes on with its own adaptive limit at %.3g requests/s and tries Redis again every %.0f s",
                self.redis_conn_id,
                self.key,
                type(err).__name__,
                err,
                self.fallback.max_rate,
                RETRY_REDIS_SECONDS,
            )

    def _up(self) -> None:
        if self._down_since is not None:
            self._down_since = None
            log.warning("Redis (connection %r) answers again: back on the shared rate limit", self.redis_conn_id)


def _limiter(bucket: Any) -> Any:
    """A pyrate-limiter ``Limiter`` over ``bucket`` that waits exactly for the next free slot; past
    starts are removed by the calls themselves, not by a background thread or task."""
    from pyrate_limiter import Limiter, SingleBucketFactory

    return Limiter(SingleBucketFactory(bucket, schedule_leak=False), buffer_ms=0)


_shared: dict[tuple[str, str], RedisRateLimiter] = {}
_shared_lock = threading.Lock()


def shared_redis_limiter(redis_conn_id: str, folder_id: str, rate: float, fallback: RateLimiter) -> RedisRateLimiter:
    """One :class:`RedisRateLimiter` per Redis connection and folder (its local limiter) in this process,
    at the rate it was first made with, as :func:`~airflow_provider_searchapi.ratelimit.shared_rate_limiter`
    does: so that a 429's hold applies to every hook of the folder.

    :param redis_conn_id: the Airflow ``redis`` connection.
    :param folder_id: the folder whose quota the limit is.
    :param rate: starts per second, all processes together.
    :param fallback: this process's limiter of the folder, used while Redis cannot be reached.
    """
    key = (redis_conn_id, fallback.name)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = RedisRateLimiter(redis_conn_id, folder_id, rate, fallback)
        return _shared[key]
