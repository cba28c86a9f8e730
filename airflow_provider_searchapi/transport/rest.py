"""REST transport: ``POST {endpoint}/v2/image/search_by_image`` over httpx, sync and async.

Owns the HTTP details: request ids, reading error bodies, capping how much of an answer is read,
turning transport failures into :class:`SearchApiHTTPError`, retries and the rate limit per attempt.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from airflow_provider_searchapi.auth import RefreshingTokenAuth, aauthorization_header
from airflow_provider_searchapi.exceptions import SearchApiHTTPError, SearchApiResponseError, certificate_refused
from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest
from airflow_provider_searchapi.ratelimit import RateLimiter
from airflow_provider_searchapi.retry import RetryPolicy
from airflow_provider_searchapi.transport.attempts import Attempts, CountsAttempts

SEARCH_BY_IMAGE_PATH = "/v2/image/search_by_image"
#: An answer larger than this is refused unread: a page of 40 results is a few tens of KiB.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: An async connection idle this long is closed (httpx's default keep-alive expiry).
IDLE_SECONDS = 5.0
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
        # The async side sends at the transport level (see _ConnectionLender), doing itself the little
        # the client did: headers, the timeout, the environment's proxy, the credential.
        self._url = httpx.URL(self.url)
        self._fixed_headers = {
            "User-Agent": _USER_AGENT,
            "Content-Type": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
        self._proxy = _environment_proxy(self._url)
        self._max_connections = max_connections
        self._connections: _ConnectionLender | None = None

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
        return await self._attempts.arun(self._aprepare, lambda header: self._asend(header, body))

    async def _aprepare(self) -> str:
        return await aauthorization_header(self._auth)

    async def _asend(self, header: str, body: bytes) -> ImageSearchResult:
        """One attempt: a request on a connection of its own; after a 401, one refresh and one resend."""
        if self._connections is None:
            self._connections = _ConnectionLender(self._new_connection, self._max_connections)
        lender = self._connections  # the one to give back to, even if aclose() runs meanwhile
        for final in (not isinstance(self._auth, RefreshingTokenAuth), True):
            client_request_id = str(uuid.uuid4())
            headers = {**self._fixed_headers, "Authorization": header, "x-client-request-id": client_request_id}
            request = httpx.Request("POST", self._url, content=body, headers=headers, extensions=self._extensions)
            connection = await lender.borrow()
            try:
                response = await connection.handle_async_request(request)
                try:
                    body_read = _CappedBody(response)
                    async for chunk in response.aiter_bytes():
                        body_read.add(chunk)
                    content = body_read.content()
                finally:
                    await response.aclose()
            except httpx.TransportError as err:
                raise self._transport_error(err, client_request_id) from None
            finally:
                lender.give_back(connection)
            if response.status_code != 401 or final:
                return _parse(response, content, client_request_id)
            header = await aauthorization_header(self._auth, stale=header)
        raise AssertionError("unreachable")

    def _new_connection(self) -> httpx.AsyncHTTPTransport:
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return httpx.AsyncHTTPTransport(verify=self._client_kwargs["verify"], limits=one, proxy=self._proxy)

    async def aclose(self) -> None:
        """Close the async connections (call it from the event loop that used them)."""
        connections, self._connections = self._connections, None
        if connections is not None:
            await connections.aclose()


class _ConnectionLender:
    """Async HTTP connections, each an httpx transport of its own, lent to one request at a time.

    httpcore looks at every connection of a pool on each request, so with one pool for 64 requests in
    flight, choosing a connection cost more CPU than the request itself. Here choosing is a list pop.
    The connection returned last is lent first; when fewer are needed, the rest sit idle, and those
    idle longer than :data:`IDLE_SECONDS` are closed at the next borrow (httpcore itself only checks
    a pool's connections when that pool is used).

    :param make: makes one connection (a transport limited to one connection).
    :param limit: connections open at most; requests beyond it wait for one to come back.
    """

    def __init__(self, make: Callable[[], httpx.AsyncHTTPTransport], limit: int) -> None:
        self._make = make
        self._idle: list[tuple[httpx.AsyncHTTPTransport, float]] = []  # with when it came back; oldest first
        self._every: list[httpx.AsyncHTTPTransport] = []
        self._available = asyncio.Semaphore(limit)

    async def borrow(self) -> httpx.AsyncHTTPTransport:
        await self._available.acquire()
        try:
            await self._close_idle()
            if self._idle:
                return self._idle.pop()[0]
            connection = self._make()
        except BaseException:
            self._available.release()
            raise
        self._every.append(connection)
        return connection

    def give_back(self, connection: httpx.AsyncHTTPTransport) -> None:
        self._idle.append((connection, time.monotonic()))
        self._available.release()

    @property
    def open(self) -> int:
        """Connections made and not closed (idle or lent)."""
        return len(self._every)

    async def _close_idle(self) -> None:
        expired = time.monotonic() - IDLE_SECONDS
        while self._idle and self._idle[0][1] < expired:
            connection, _ = self._idle.pop(0)
            self._every.remove(connection)
            await connection.aclose()

    async def aclose(self) -> None:
        connections, self._every, self._idle = self._every, [], []
        for connection in connections:
            await connection.aclose()


def _environment_proxy(url: httpx.URL) -> str | None:
    """The proxy that ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` name for ``url`` unless
    ``NO_PROXY`` exempts its host: what an httpx client would use (``trust_env``), including reading
    ``host:port`` without a scheme as ``http://host:port``."""
    if urllib.request.proxy_bypass_environment(url.host):
        return None
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and "://" not in proxy:
        proxy = f"http://{proxy}"
    return proxy or None


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
