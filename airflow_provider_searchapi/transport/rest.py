"""REST transport: ``POST {endpoint}/v2/image/search_by_image``, sync over an httpx client, async
over our HTTP/1.1 connections (answers parsed by httptools) on asyncio's transports (httpcore's
through a proxy).

Owns the HTTP details: request ids, reading error bodies, capping how much of an answer is read,
turning transport failures into :class:`SearchApiHTTPError`, retries and the rate limit per attempt.
"""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpcore
import httpx
from pydantic import ValidationError

from airflow_provider_searchapi.auth import RefreshingTokenAuth, aauthorization_header
from airflow_provider_searchapi.exceptions import SearchApiHTTPError, SearchApiResponseError, certificate_refused
from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest
from airflow_provider_searchapi.ratelimit import RateLimiter
from airflow_provider_searchapi.retry import RetryPolicy
from airflow_provider_searchapi.transport.asyncio_network import AsyncioNetworkBackend
from airflow_provider_searchapi.transport.attempts import Attempts, CountsAttempts
from airflow_provider_searchapi.transport.http11 import Answer, Http11Connection

SEARCH_BY_IMAGE_PATH = "/v2/image/search_by_image"
#: An answer larger than this is refused unread: a page of 40 results is a few tens of KiB.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: An async connection idle this long is closed (httpx's default keep-alive expiry).
IDLE_SECONDS = 5.0
_USER_AGENT = "airflow-provider-searchapi"
#: What httpcore raises when no answer came: each becomes a :class:`SearchApiHTTPError` with status 0.
_HTTPCORE_FAILURES = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
)


class RestTransport(CountsAttempts):
    """Sends search requests over REST.

    :param endpoint: base URL of the Search API.
    :param auth: the ``httpx.Auth`` that sets the Authorization header.
    :param limiter: rate limiter every attempt waits on.
    :param timeout: seconds per HTTP request.
    :param retry_policy: how failed calls are retried.
    :param verify_tls: verify the server's certificate.
    :param max_connections: connections open at most (for sync calls; for async calls, per event loop).
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
        # One TLS context for every connection: building one costs milliseconds.
        self._ssl_context = httpx.create_ssl_context(verify=verify_tls)
        self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._client_kwargs: dict[str, Any] = {
            "auth": auth,
            "timeout": timeout,
            "verify": self._ssl_context,
            "limits": limits,
            "headers": {"User-Agent": _USER_AGENT},
        }
        self._timeout = timeout
        self._client: httpx.Client | None = None
        # The async side talks HTTP/1.1 itself (see transport/http11.py and _ConnectionLender), doing
        # the little that an httpx client does on top: headers, the timeout, the environment's proxy, the credential,
        # decoding a compressed answer.
        url = httpx.URL(self.url)
        self._host = url.host
        self._core_url = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
        self._origin = self._core_url.origin
        self._fixed_headers = [
            (b"Host", url.netloc),
            (b"User-Agent", _USER_AGENT.encode()),
            (b"Content-Type", b"application/json"),
            (b"Accept-Encoding", b"gzip, deflate"),
        ]
        self._proxy = _environment_proxy(url)
        self._max_connections = max_connections
        # A connection belongs to the event loop that opened it: one lender per loop, so that a hook used
        # by successive asyncio.run() calls (or by loops in several threads) never lends a connection of
        # another loop (that failed with "Event loop is closed"). A lender leaves with aclose(), or once
        # its loop is closed, when another loop asks; the lock keeps threads' loops from racing on it.
        self._lenders: dict[asyncio.AbstractEventLoop, _ConnectionLender] = {}
        self._lenders_lock = threading.Lock()

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
                body_read = _CappedBody()
                for chunk in response.iter_bytes():
                    body_read.add(response.status_code, chunk)
                content = body_read.content()
        except httpx.TransportError as err:
            raise self._transport_error(err, client_request_id) from None
        except httpx.DecodingError as err:
            raise SearchApiResponseError(
                f"answer with HTTP {response.status_code} does not decompress: {err}"
            ) from None
        return _parse(response.status_code, response.headers, response.reason_phrase, content, client_request_id)

    def _transport_error(self, err: Exception, client_request_id: str) -> SearchApiHTTPError:
        """No answer: a timeout or a connection failure (retried), or a refused certificate or a
        request that cannot be sent (final). The underlying message is not passed on: it may quote
        a header."""
        if isinstance(err, (httpx.TimeoutException, httpcore.TimeoutException)):
            return SearchApiHTTPError(0, f"no answer within {self._timeout:g} s", request_id=client_request_id)
        if isinstance(err, (httpx.LocalProtocolError, httpcore.LocalProtocolError)):
            return SearchApiHTTPError(
                0,
                "the request could not be sent: a header holds characters HTTP does not allow "
                "(check the credential for line breaks or spaces)",
                request_id=client_request_id,
                retryable=False,
            )
        if certificate_refused(err):
            return SearchApiHTTPError(
                0,
                f"TLS certificate of {self._host} could not be verified; fix the server's "
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
        body = request.encode_parts()
        return await self._attempts.arun(self._aprepare, lambda header: self._asend(header, body))

    async def _aprepare(self) -> str:
        return await aauthorization_header(self._auth)

    async def _asend(self, header: str, body: tuple[bytes, ...]) -> ImageSearchResult:
        """One attempt: a request on a connection of its own; after a 401, one refresh and one resend."""
        lender = self._lender()  # the one to give back to, even if aclose() runs meanwhile
        length = (b"Content-Length", str(sum(map(len, body))).encode())
        for final in (not isinstance(self._auth, RefreshingTokenAuth), True):
            client_request_id = str(uuid.uuid4())
            headers = [
                *self._fixed_headers,
                length,
                (b"Authorization", header.encode()),
                (b"x-client-request-id", client_request_id.encode()),
            ]
            body_read = _CappedBody()
            connection = await lender.borrow()
            try:
                answer = await connection.request(
                    b"POST", self._core_url.target, headers, body, timeout=self._timeout, on_body=body_read.add
                )
            except _HTTPCORE_FAILURES as err:
                raise self._transport_error(err, client_request_id) from None
            finally:  # a connection that failed or was cancelled midway closed itself
                lender.give_back(connection)
            if answer.status != 401 or final:
                answer_headers = httpx.Headers(answer.headers)
                content = _decoded(body_read.content(), answer_headers.get("Content-Encoding"), answer.status)
                reason = answer.reason.decode("ascii", "replace")
                return _parse(answer.status, answer_headers, reason, content, client_request_id)
            header = await aauthorization_header(self._auth, stale=header)
        raise AssertionError("unreachable")

    def _new_connection(self) -> _Connection:
        """One connection to the endpoint, opened by its first request; through a proxy, httpcore's pool
        of one, which forwards the request or opens a tunnel, as the proxy and the scheme need."""
        if self._proxy:
            pool = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context,
                proxy=_core_proxy(self._proxy),
                max_connections=1,
                max_keepalive_connections=1,
                network_backend=_NETWORK_BACKEND,
            )
            return _ProxiedConnection(pool, self._core_url, self._timeout)
        return Http11Connection(self._origin, self._ssl_context, _NETWORK_BACKEND)

    def _lender(self) -> _ConnectionLender:
        """The running event loop's connections. Those of closed loops are dropped: their sockets cannot
        be closed through a closed loop, and are closed when collected (``aclose()`` before the loop
        ends closes them at once)."""
        loop = asyncio.get_running_loop()
        lender = self._lenders.get(loop)
        if lender is None:
            with self._lenders_lock:
                for ended in [other for other in list(self._lenders) if other.is_closed()]:
                    self._lenders.pop(ended, None)
                lender = self._lenders.setdefault(loop, _ConnectionLender(self._new_connection, self._max_connections))
        return lender

    async def aclose(self) -> None:
        """Close the running event loop's async connections (connections belong to the loop that opened them)."""
        lender = self._lenders.pop(asyncio.get_running_loop(), None)
        if lender is not None:
            await lender.aclose()


_NETWORK_BACKEND = AsyncioNetworkBackend()


class _ProxiedConnection:
    """The :class:`Http11Connection` interface over an httpcore pool of one connection through a proxy.
    The URL and the timeout are the transport's, given here once (``request``'s ``target`` and
    ``timeout`` are the same ones).

    :param pool: the pool, set up with the proxy.
    :param url: the URL requested.
    :param timeout: seconds per connect, write and read.
    """

    def __init__(self, pool: httpcore.AsyncConnectionPool, url: httpcore.URL, timeout: float) -> None:
        self._pool = pool
        self._url = url
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}

    def is_closed(self) -> bool:
        return False  # the pool replaces a closed connection itself

    def has_expired(self) -> bool:
        return False

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: tuple[bytes, ...],
        *,
        timeout: float | None,
        on_body: Callable[[int, bytes], None],
    ) -> Answer:
        request = httpcore.Request(
            method, self._url, headers=headers, content=_Pieces(body), extensions=self._extensions
        )
        response = await self._pool.handle_async_request(request)
        try:
            async for chunk in response.aiter_stream():
                on_body(response.status, chunk)
        finally:
            await response.aclose()
        return Answer(response.status, response.extensions.get("reason_phrase", b""), response.headers)

    async def aclose(self) -> None:
        await self._pool.aclose()


_Connection = Http11Connection | _ProxiedConnection


class _ConnectionLender:
    """Async HTTP connections, lent to one request at a time.

    httpcore looks at every connection of a pool on each request, so with one pool for 64 requests in
    flight, choosing a connection cost more CPU than the request itself; even a pool of one costs
    0.2 ms per request. Here choosing is a list pop, and a connection that the server closed while it
    sat idle (or that failed) is closed and replaced when it comes up. The connection returned last
    is lent first; when fewer are needed, the rest sit idle, and those idle longer than
    :data:`IDLE_SECONDS` are closed at the next borrow.

    :param make: makes one connection (opened by its first request).
    :param limit: connections open at most; requests beyond it wait for one to come back.
    """

    def __init__(self, make: Callable[[], _Connection], limit: int) -> None:
        self._make = make
        self._idle: list[tuple[_Connection, float]] = []  # with when it came back; oldest first
        self._every: list[_Connection] = []
        self._available = asyncio.Semaphore(limit)
        self._closed = False

    async def borrow(self) -> _Connection:
        if self._closed:
            raise RuntimeError("the hook's async connections were closed (aclose()) while a request needed one")
        await self._available.acquire()
        try:
            await self._close_idle()
            while self._idle:
                connection = self._idle.pop()[0]
                if not _unusable(connection):
                    return connection
                await self._close(connection)
            connection = self._make()
        except BaseException:
            self._available.release()
            raise
        self._every.append(connection)
        return connection

    def give_back(self, connection: _Connection) -> None:
        self._idle.append((connection, time.monotonic()))
        self._available.release()

    @property
    def open(self) -> int:
        """Connections made and not closed (idle or lent)."""
        return len(self._every)

    async def _close_idle(self) -> None:
        expired = time.monotonic() - IDLE_SECONDS
        while self._idle and self._idle[0][1] < expired:
            await self._close(self._idle.pop(0)[0])

    async def _close(self, connection: _Connection) -> None:
        if connection in self._every:
            self._every.remove(connection)
        await connection.aclose()

    async def aclose(self) -> None:
        self._closed = True
        connections, self._every, self._idle = self._every, [], []
        for connection in connections:
            await connection.aclose()


def _unusable(connection: _Connection) -> bool:
    """Whether a connection failed, was closed, or was closed by the server while idle."""
    return connection.is_closed() or connection.has_expired()


class _Pieces:
    """A request body written piece by piece (httpcore takes an async iterable of bytes): the image's
    base64 text goes out as it is, not copied into one body first."""

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def _core_proxy(url: str) -> httpcore.Proxy:
    """httpcore's description of a proxy URL, its ``user:password@`` sent as Proxy-Authorization as
    httpx does (httpcore would drop them)."""
    proxy = httpx.Proxy(url)
    return httpcore.Proxy(
        url=httpcore.URL(
            scheme=proxy.url.raw_scheme, host=proxy.url.raw_host, port=proxy.url.port, target=proxy.url.raw_path
        ),
        auth=proxy.raw_auth,
        headers=proxy.headers.raw,
    )


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

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, status: int, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > MAX_RESPONSE_BYTES:
            raise SearchApiResponseError(
                f"answer with HTTP {status} is larger than {MAX_RESPONSE_BYTES:,} bytes; not read"
            )
        self._chunks.append(chunk)

    def content(self) -> bytes:
        return b"".join(self._chunks)


def _decoded(content: bytes, encoding: str | None, status: int) -> bytes:
    """An answer's bytes undone from the ``Content-Encoding`` asked for (gzip or deflate), refusing
    more than :data:`MAX_RESPONSE_BYTES` once decompressed.

    Only a 200 must decode: an error answer that does not is kept as it came, so that its status
    (429, 503: retried) and headers still count.
    """
    try:
        return _decompressed(content, encoding, status)
    except SearchApiResponseError:
        if status == 200:
            raise
        return content


def _decompressed(content: bytes, encoding: str | None, status: int) -> bytes:
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return content
    if name not in ("gzip", "deflate"):
        raise SearchApiResponseError(f"answer with HTTP {status} in an encoding not asked for: {encoding!r}")
    errors = []
    for wbits in (zlib.MAX_WBITS | 32, -zlib.MAX_WBITS):  # gzip or zlib framing; raw deflate, as some send
        decompressor = zlib.decompressobj(wbits)
        try:
            data = decompressor.decompress(content, MAX_RESPONSE_BYTES + 1)
        except zlib.error as err:
            errors.append(str(err))
            continue
        if len(data) > MAX_RESPONSE_BYTES:
            raise SearchApiResponseError(
                f"answer with HTTP {status} is larger than {MAX_RESPONSE_BYTES:,} bytes once decompressed; not read"
            )
        if not decompressor.eof:
            raise SearchApiResponseError(f"answer with HTTP {status} is cut short ({encoding} stream unfinished)")
        return data
    raise SearchApiResponseError(f"answer with HTTP {status} does not decompress ({encoding}): {errors[0]}")


def _parse(
    status: int, headers: httpx.Headers, reason: str, content: bytes, client_request_id: str
) -> ImageSearchResult:
    if status != 200:
        raise _http_error(status, headers, reason, content, client_request_id)
    try:
        return ImageSearchResult.model_validate_json(content)
    except ValidationError as err:
        first = err.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise SearchApiResponseError(
            f"unreadable answer (request id {_server_request_id(headers) or client_request_id}): "
            f"{where}: {first['msg']}"
        ) from None


def _http_error(
    status: int, headers: httpx.Headers, reason: str, content: bytes, client_request_id: str
) -> SearchApiHTTPError:
    message = reason or "error"
    grpc_code = None
    request_id = _server_request_id(headers)
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
        status,
        message,
        request_id=request_id or client_request_id,
        grpc_code=grpc_code,
        retry_after=_retry_after(headers.get("Retry-After")),
    )


def _server_request_id(headers: httpx.Headers) -> str | None:
    return headers.get("x-request-id") or headers.get("x-server-trace-id")


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
