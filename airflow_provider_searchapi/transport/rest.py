"""REST transport: ``POST {endpoint}/v2/image/search_by_image`` over httpx, sync and async.

httpx does the HTTP: connection pools, TLS, proxies from the environment (``HTTPS_PROXY``,
``NO_PROXY``), decompression. What is ours: the ``Authorization`` header the caller gives each attempt
(so that a resend after a 401 takes its own rate-limit slot), request ids, the cap on how much of an
answer is read, a deadline for the whole request, and turning failures into :class:`SearchApiHTTPError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import ValidationError

from airflow_provider_searchapi.aio import PerEventLoop
from airflow_provider_searchapi.exceptions import SearchApiHTTPError, SearchApiResponseError, certificate_refused
from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest
from airflow_provider_searchapi.retry import Caller, retry_after_seconds

#: A larger answer (once decompressed) is refused: a page of 40 results is a few tens of KiB.
MAX_RESPONSE_BYTES = 1024 * 1024
#: Connections of one async client at most (see :class:`_AsyncClients`).
CONNECTIONS_PER_CLIENT = 8


class RestTransport:
    """Sends search requests over REST.

    :param endpoint: base URL of the Search API.
    :param auth: the connection's credential (its header value goes into ``Authorization``).
    :param caller: runs each call's attempts (credential, retries, rate limit, counters).
    :param timeout: seconds a request may take in all: connecting, sending and reading the answer.
    :param verify_tls: verify the server's certificate.
    :param max_connections: connections open at most (sync calls; async calls, per event loop).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        auth: httpx.Auth,
        caller: Caller,
        timeout: float,
        verify_tls: bool = True,
        max_connections: int = 100,
    ) -> None:
        self.url = endpoint.rstrip("/") + "/v2/image/search_by_image"
        self._auth = auth
        self._caller = caller
        self._timeout = timeout
        self._settings: dict[str, Any] = {
            "timeout": timeout,
            # One TLS context for every client: each would otherwise load the CA bundle again.
            "verify": httpx.create_ssl_context(verify=verify_tls),
            "headers": {"User-Agent": "airflow-provider-searchapi", "Content-Type": "application/json"},
        }
        self._max_connections = max_connections
        self._client: httpx.Client | None = None
        self._async_clients = PerEventLoop(lambda: _AsyncClients(self._settings, max_connections))

    def search(self, request: SearchRequest) -> ImageSearchResult:
        """Send one request (with retries) and return the parsed page."""
        body = request.encode()
        return self._caller.call(self._auth, lambda header: self._send(body, header))

    async def asearch(self, request: SearchRequest) -> ImageSearchResult:
        """Send one request (with retries) without blocking the event loop."""
        body = request.encode()
        return await self._caller.acall(self._auth, lambda header: self._asend(body, header))

    def _send(self, body: bytes, authorization: str) -> ImageSearchResult:
        if self._client is None:
            self._client = httpx.Client(**self._settings, limits=_limits(self._max_connections))
        request_id = str(uuid.uuid4())
        deadline = time.monotonic() + self._timeout  # httpx's timeout is per read, this one for the whole
        try:
            headers = _headers(authorization, request_id)
            with self._client.stream("POST", self.url, content=body, headers=headers) as response:
                content = _CappedBody(response.status_code)
                try:
                    for chunk in response.iter_bytes():
                        content.add(chunk)
                        if time.monotonic() > deadline:
                            raise httpx.ReadTimeout("deadline passed")
                except httpx.DecodingError as err:
                    content.undecodable(err)
        except httpx.HTTPError as err:
            raise self._transport_error(err, request_id) from None
        return _parse(response, bytes(content), request_id)

    async def _asend(self, body: bytes, authorization: str) -> ImageSearchResult:
        request_id = str(uuid.uuid4())
        headers = _headers(authorization, request_id)
        try:
            async with asyncio.timeout(self._timeout), self._async_clients.get().lend() as client:
                async with client.stream("POST", self.url, content=body, headers=headers) as response:
                    content = _CappedBody(response.status_code)
                    try:
                        async for chunk in response.aiter_bytes():
                            content.add(chunk)
                    except httpx.DecodingError as err:
                        content.undecodable(err)
        except TimeoutError:
            raise self._transport_error(httpx.ReadTimeout("deadline passed"), request_id) from None
        except httpx.HTTPError as err:
            raise self._transport_error(err, request_id) from None
        return _parse(response, bytes(content), request_id)

    def close(self) -> None:
        """Close the sync client."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the running event loop's async clients."""
        clients = self._async_clients.pop()
        if clients is not None:
            for client in clients.clients:
                await client.aclose()

    def _transport_error(self, err: httpx.HTTPError, request_id: str) -> SearchApiHTTPError:
        """No answer: a timeout or a connection failure (retried), or a refused certificate or a
        request that cannot be sent (final). The underlying message is not passed on: it may quote
        a header."""
        if isinstance(err, httpx.TimeoutException):
            return SearchApiHTTPError(0, f"no answer within {self._timeout:g} s", request_id=request_id)
        if isinstance(err, httpx.LocalProtocolError):
            return SearchApiHTTPError(
                0,
                "the request could not be sent: a header holds characters HTTP does not allow "
                "(check the credential for line breaks or spaces)",
                request_id=request_id,
                retryable=False,
            )
        if certificate_refused(err):
            return SearchApiHTTPError(
                0,
                f"TLS certificate of {httpx.URL(self.url).host} could not be verified; fix the server's "
                "certificate or the CA bundle (verify_tls=false turns checking off, at your own risk)",
                request_id=request_id,
                retryable=False,
            )
        return SearchApiHTTPError(0, f"connection failed: {type(err).__name__}", request_id=request_id)


def _limits(connections: int) -> httpx.Limits:
    return httpx.Limits(max_connections=connections, max_keepalive_connections=connections)


class _AsyncClients:
    r"""``httpx.AsyncClient``\ s of at most :data:`CONNECTIONS_PER_CLIENT` connections each, the least
    busy lent to each request: httpcore's pool looks at each of its connections for every request, so
    its CPU cost grows with the square of the connections in use.

    :param settings: the clients' settings, but their ``limits``.
    :param max_connections: connections open at most, over all the clients.
    """

    def __init__(self, settings: dict[str, Any], max_connections: int) -> None:
        size = min(max_connections, CONNECTIONS_PER_CLIENT)
        self.clients = [httpx.AsyncClient(**settings, limits=_limits(size)) for _ in range(-(-max_connections // size))]
        self._busy = [0] * len(self.clients)

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[httpx.AsyncClient]:
        index = self._busy.index(min(self._busy))
        self._busy[index] += 1
        try:
            yield self.clients[index]
        finally:
            self._busy[index] -= 1


def _headers(authorization: str, request_id: str) -> dict[str, str]:
    return {"Authorization": authorization, "x-client-request-id": request_id}


class _CappedBody(bytearray):
    """An answer's decompressed bytes, refusing more than :data:`MAX_RESPONSE_BYTES`.

    :param status: the answer's HTTP status, for messages.
    """

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def add(self, chunk: bytes) -> None:
        if len(self) + len(chunk) > MAX_RESPONSE_BYTES:
            raise SearchApiResponseError(
                f"answer with HTTP {self.status} is larger than {MAX_RESPONSE_BYTES:,} bytes; not read"
            )
        self.extend(chunk)

    def undecodable(self, err: httpx.DecodingError) -> None:
        """A body that does not decompress: an error for a 200; an error answer keeps its status (429 and
        503 are still retried), without its body."""
        if self.status == 200:
            raise SearchApiResponseError(f"answer with HTTP 200 does not decompress: {err}") from None
        self.clear()


def _parse(response: httpx.Response, content: bytes, client_request_id: str) -> ImageSearchResult:
    if response.status_code != 200:
        raise _http_error(response, content, client_request_id)
    try:
        return ImageSearchResult.model_validate_json(content)
    except ValidationError as err:
        first = err.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise SearchApiResponseError(
            f"unreadable answer (request id {_server_request_id(response.headers) or client_request_id}): "
            f"{where}: {first['msg']}"
        ) from None


def _http_error(response: httpx.Response, content: bytes, client_request_id: str) -> SearchApiHTTPError:
    # The server may quote the credential sent: it is cut out before the text is read (and shortened).
    credential = response.request.headers.get("Authorization", "").partition(" ")[2]
    content = content.replace(credential.encode(), b"[redacted]") if credential else content
    message = response.reason_phrase or "error"
    grpc_code = None
    request_id = _server_request_id(response.headers)
    try:
        body = json.loads(content)
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
        retry_after=retry_after_seconds(response.headers.get("Retry-After")),
    )


def _server_request_id(headers: httpx.Headers) -> str | None:
    return headers.get("x-request-id") or headers.get("x-server-trace-id")
