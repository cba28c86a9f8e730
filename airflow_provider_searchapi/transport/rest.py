"""REST transport: ``POST {endpoint}/v2/image/search_by_image`` over httpx, sync and async.

Owns the HTTP details: request ids, reading error bodies, capping how much of an answer is read,
turning transport failures into :class:`SearchApiHTTPError`, retries and the rate limit per attempt.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import time
import uuid
from typing import Any

import httpx
from pydantic import ValidationError

from airflow_provider_searchapi.auth import RefreshingTokenAuth
from airflow_provider_searchapi.exceptions import SearchApiHTTPError, SearchApiResponseError, certificate_refused
from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest
from airflow_provider_searchapi.ratelimit import RateLimiter
from airflow_provider_searchapi.retry import RetryPolicy
from airflow_provider_searchapi.transport.attempts import Attempts, CountsAttempts

SEARCH_BY_IMAGE_PATH = "/v2/image/search_by_image"
#: An answer larger than this is refused unread: a page of 40 results is a few tens of KiB.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: httpcore looks at every pooled connection on each request, so its cost grows with the pool. The
#: async side therefore spreads requests over several clients whose pools hold at most this many.
POOL_SHARD_SIZE = 16
_USER_AGENT = "airflow-provider-searchapi"


class RestTransport(CountsAttempts):
    """Sends search requests over REST.

    :param endpoint: base URL of the Search API.
    :param auth: the ``httpx.Auth`` that sets the Authorization header.
    :param limiter: rate limiter every attempt waits on.
    :param timeout: seconds per HTTP request.
    :param retry_policy: how failed calls are retried.
    :param verify_tls: verify the server's certificate.
    :param max_connections: connections open at most (per sync client; over all async clients).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        auth: httpx.Auth,
        limiter: RateLimiter,
        timeout: float,
        retry_policy: RetryPolicy | None = None,
        verify_tls: bool = True,
        max_connections: int = 100,
    ) -> None:
        self.url = endpoint.rstrip("/") + SEARCH_BY_IMAGE_PATH
        self._auth = auth
        self._attempts = Attempts(limiter, retry_policy)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client_kwargs: dict[str, Any] = {
            "auth": auth,
            "timeout": timeout,
            # One TLS context for every client: building one costs milliseconds.
            "verify": httpx.create_ssl_context() if verify_tls else False,
            "limits": limits,
            "headers": {"User-Agent": _USER_AGENT},
        }
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._max_connections = max_connections
        self._aclients: list[httpx.AsyncClient] = []
        self._turn = itertools.count()

    # -- sync ---------------------------------------------------------------------------------
    def search(self, request: SearchRequest) -> ImageSearchResult:
        """Send one request (with retries) and return the parsed page."""
        body = request.encode()
        return self._attempts.run(self._prepare, lambda _: self._send(body))

    def _prepare(self) -> None:
        if isinstance(self._auth, RefreshingTokenAuth):
            self._auth.get_token()

    def _send(self, body: bytes) -> ImageSearchResult:
        if self._client is None:
            self._client = httpx.Client(**self._client_kwargs)
        client_request_id = str(uuid.uuid4())
        try:
            with self._client.stream("POST", self.url, content=body, headers=_headers(client_request_id)) as response:
                body_read = _CappedBody(response)
                for chunk in response.iter_bytes():
                    body_read.add(chunk)
                content = body_read.content()
        except httpx.TransportError as err:
            raise self._transport_error(err, client_request_id) from None
        return _parse(response, content, client_request_id)

    def _transport_error(self, err: httpx.TransportError, client_request_id: str) -> SearchApiHTTPError:
        """No answer: a timeout or a connection failure (retried), or a refused certificate (final)."""
        if isinstance(err, httpx.TimeoutException):
            return SearchApiHTTPError(0, f"no answer within {self._timeout:g} s", request_id=client_request_id)
        if certificate_refused(err):
            return SearchApiHTTPError(
                0,
                f"TLS certificate of {httpx.URL(self.url).host} could not be verified; fix the server's "
                "certificate or the CA bundle (verify_tls=false turns checking off, at your own risk)",
                request_id=client_request_id,
                retryable=False,
            )
        return SearchApiHTTPError(0, f"connection failed: {type(err).__name__}", request_id=client_request_id)

    def close(self) -> None:
        """Close the sync client."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- async --------------------------------------------------------------------------------
    async def asearch(self, request: SearchRequest) -> ImageSearchResult:
        """Send one request (with retries) without blocking the event loop."""
        body = request.encode()
        return await self._attempts.arun(self._aprepare, lambda client: self._asend(client, body))

    async def _aprepare(self) -> httpx.AsyncClient:
        client = self._async_client()
        if isinstance(self._auth, RefreshingTokenAuth) and self._auth.cached_token() is None:
            await asyncio.to_thread(self._auth.get_token)
        return client

    async def _asend(self, client: httpx.AsyncClient, body: bytes) -> ImageSearchResult:
        client_request_id = str(uuid.uuid4())
        try:
            async with client.stream("POST", self.url, content=body, headers=_headers(client_request_id)) as response:
                body_read = _CappedBody(response)
                async for chunk in response.aiter_bytes():
                    body_read.add(chunk)
                content = body_read.content()
        except httpx.TransportError as err:
            raise self._transport_error(err, client_request_id) from None
        return _parse(response, content, client_request_id)

    def _async_client(self) -> httpx.AsyncClient:
        """The next of the async clients, made on first use (in the event loop that uses them)."""
        if not self._aclients:
            shards = max(1, math.ceil(self._max_connections / POOL_SHARD_SIZE))
            size = math.ceil(self._max_connections / shards)
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            self._aclients = [httpx.AsyncClient(**{**self._client_kwargs, "limits": limits}) for _ in range(shards)]
        return self._aclients[next(self._turn) % len(self._aclients)]

    async def aclose(self) -> None:
        """Close the async clients (call it from the event loop that used them)."""
        clients, self._aclients = self._aclients, []
        for client in clients:
            await client.aclose()


def _headers(client_request_id: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "x-client-request-id": client_request_id}


class _CappedBody:
    """Collects an answer's bytes, refusing more than :data:`MAX_RESPONSE_BYTES`."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > MAX_RESPONSE_BYTES:
            raise SearchApiResponseError(
                f"answer with HTTP {self._response.status_code} is larger than {MAX_RESPONSE_BYTES:,} bytes; not read"
            )
        self._chunks.append(chunk)

    def content(self) -> bytes:
        return b"".join(self._chunks)


def _parse(response: httpx.Response, content: bytes, client_request_id: str) -> ImageSearchResult:
    if response.status_code != 200:
        raise _http_error(response, content, client_request_id)
    try:
        return ImageSearchResult.model_validate_json(content)
    except ValidationError as err:
        first = err.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise SearchApiResponseError(
            f"unreadable answer (request id {_server_request_id(response) or client_request_id}): "
            f"{where}: {first['msg']}"
        ) from None


def _http_error(response: httpx.Response, content: bytes, client_request_id: str) -> SearchApiHTTPError:
    message = response.reason_phrase or "error"
    grpc_code = None
    request_id = _server_request_id(response)
    try:
        body = httpx.Response(200, content=content).json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("message"), str) and body["message"]:
            message = body["message"][:1000]
        if isinstance(body.get("code"), int):
            grpc_code = body["code"]
        for detail in body.get("details") or []:
            if isinstance(detail, dict) and isinstance(detail.get("requestId"), str):
                request_id = detail["requestId"]
    elif content:
        message = f"{message}: {content[:200].decode('utf-8', 'replace')}"
    return SearchApiHTTPError(
        response.status_code,
        message,
        request_id=request_id or client_request_id,
        grpc_code=grpc_code,
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


def _server_request_id(response: httpx.Response) -> str | None:
    return response.headers.get("x-request-id") or response.headers.get("x-server-trace-id")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
