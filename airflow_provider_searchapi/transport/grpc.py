"""gRPC transport: ``yandex.cloud.searchapi.v2.ImageSearchService/SearchByImage``, sync and async.

Same contract as :class:`~airflow_provider_searchapi.transport.rest.RestTransport`: the same models,
credentials (sent as ``authorization`` metadata), retry policy and rate limiter, and errors mapped to
:class:`SearchApiHTTPError` with the HTTP status of the same meaning (so retry decisions match) and the
gRPC code. Needs the ``grpc`` extra: ``pip install 'airflow-provider-searchapi[grpc]'``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import httpx

from airflow_provider_searchapi.auth import RefreshingTokenAuth, aauthorization_header, authorization_header
from airflow_provider_searchapi.exceptions import SearchApiConfigError, SearchApiHTTPError, SearchApiResponseError
from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest
from airflow_provider_searchapi.retry import Caller, retry_after_seconds
from airflow_provider_searchapi.transport.grpc_messages import (
    METHOD,
    ImageSearchByImageRequest,
    ImageSearchByImageResponse,
    request_message,
    result_from_message,
)
from airflow_provider_searchapi.transport.rest import MAX_RESPONSE_BYTES

try:
    import grpc
    import grpc.aio
except ImportError:  # pragma: no cover - exercised only without the extra
    grpc = None

#: gRPC status code name → the HTTP status of the same meaning (what REST would answer).
HTTP_STATUS_OF = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

#: What gRPC core says when the TLS handshake fails on the server's certificate (BoringSSL's words).
_CERTIFICATE_REFUSED = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "Hostname Verification Check failed")
#: Metadata keys that carry the server's request id (the same headers REST reads).
_REQUEST_ID_KEYS = ("x-request-id", "x-server-trace-id")


def _split_target(endpoint: str) -> tuple[str, bool]:
    """``host:port`` and whether to use TLS: ``http://`` means plaintext (a local emulator)."""
    if endpoint.startswith("http://"):
        return endpoint.removeprefix("http://").rstrip("/"), False
    return endpoint.removeprefix("https://").rstrip("/"), True


class GrpcTransport:
    """Sends search requests over gRPC.

    :param endpoint: ``host:port`` (TLS), ``https://host:port`` (TLS) or ``http://host:port`` (plaintext).
    :param auth: the connection's credential (its header value goes into the ``authorization`` metadata).
    :param caller: runs each call's attempts (retries, rate limit, counters).
    :param timeout: seconds per call (the gRPC deadline).
    :param verify_tls: must stay on: gRPC offers no switch to skip certificate checks.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        auth: httpx.Auth,
        caller: Caller,
        timeout: float,
        verify_tls: bool = True,
    ) -> None:
        if grpc is None:
            raise SearchApiConfigError(
                "transport", "grpc needs the grpc extra: pip install 'airflow-provider-searchapi[grpc]'"
            )
        self.target, self._secure = _split_target(endpoint)
        if self._secure and not verify_tls:
            raise SearchApiConfigError("verify_tls", "cannot be false with transport=grpc over TLS")
        self._auth = auth
        self._caller = caller
        self._timeout = timeout
        self._options = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
        self._channel: Any = None
        # A grpc.aio channel belongs to the event loop it was made on: one per loop (see RestTransport).
        self._achannels: dict[asyncio.AbstractEventLoop, Any] = {}
        self._achannels_lock = threading.Lock()

    # -- credentials ----------------------------------------------------------------------------
    def _header(self, stale: str | None = None) -> str:
        return authorization_header(self._auth, stale=stale)

    async def _aheader(self, stale: str | None = None) -> str:
        return await aauthorization_header(self._auth, stale=stale)

    def _refreshable(self) -> bool:
        return isinstance(self._auth, RefreshingTokenAuth)

    # -- sync -----------------------------------------------------------------------------------
    def _call(self) -> Any:
        if self._channel is None:
            self._channel = (
                grpc.secure_channel(self.target, grpc.ssl_channel_credentials(), options=self._options)
                if self._secure
                else grpc.insecure_channel(self.target, options=self._options)
            )
        return self._channel.unary_unary(
            METHOD,
            request_serializer=ImageSearchByImageRequest.SerializeToString,
            response_deserializer=ImageSearchByImageResponse.FromString,
        )

    def search(self, request: SearchRequest) -> ImageSearchResult:
        """Send one request (with retries) and return the parsed page."""
        message = request_message(request)
        return self._caller.call(self._header, lambda header: result_from_message(self._send(message, header)))

    def _send(self, message: Any, header: str) -> Any:
        for final in (not self._refreshable(), True):
            request_id = str(uuid.uuid4())
            try:
                return self._call()(message, timeout=self._timeout, metadata=_call_metadata(header, request_id))
            except grpc.RpcError as err:
                if final or err.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise _error(err, request_id, self.target) from None
                header = self._header(stale=header)  # one refresh, one resend
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the sync channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # -- async ----------------------------------------------------------------------------------
    def _acall(self) -> Any:
        loop = asyncio.get_running_loop()
        channel = self._achannels.get(loop)
        if channel is None:
            with self._achannels_lock:
                for ended in [other for other in list(self._achannels) if other.is_closed()]:
                    self._achannels.pop(ended, None)  # a closed loop's channel cannot be closed any more
                channel = self._achannels.get(loop)
                if channel is None:
                    channel = self._achannels[loop] = (
                        grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(), options=self._options)
                        if self._secure
                        else grpc.aio.insecure_channel(self.target, options=self._options)
                    )
        return channel.unary_unary(
            METHOD,
            request_serializer=ImageSearchByImageRequest.SerializeToString,
            response_deserializer=ImageSearchByImageResponse.FromString,
        )

    async def asearch(self, request: SearchRequest) -> ImageSearchResult:
        """Send one request (with retries) without blocking the event loop."""
        message = request_message(request)

        async def send(header: str) -> ImageSearchResult:
            return result_from_message(await self._asend(message, header))

        return await self._caller.acall(self._aheader, send)

    async def _asend(self, message: Any, header: str) -> Any:
        for final in (not self._refreshable(), True):
            request_id = str(uuid.uuid4())
            try:
                return await self._acall()(message, timeout=self._timeout, metadata=_call_metadata(header, request_id))
            except grpc.aio.AioRpcError as err:
                if final or err.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise _error(err, request_id, self.target) from None
                header = await self._aheader(stale=header)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close the running event loop's async channel."""
        channel = self._achannels.pop(asyncio.get_running_loop(), None)
        if channel is not None:
            await channel.close()


def _call_metadata(header: str, request_id: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", header), ("x-client-request-id", request_id))


def _error(err: Any, client_request_id: str, target: str) -> Exception:
    """Our error for a failed call, with the HTTP status of the same meaning and the gRPC code.

    :param err: the ``grpc.RpcError`` (sync) or ``grpc.aio.AioRpcError`` of the call.
    :param client_request_id: the ``x-client-request-id`` we sent, quoted when the server gave none.
    :param target: ``host:port`` called, named when its certificate is refused.
    """
    code = err.code()
    details = err.details() or code.name
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return SearchApiResponseError(f"answer larger than {MAX_RESPONSE_BYTES:,} bytes; not read")
    if code == grpc.StatusCode.UNAVAILABLE and any(words in details for words in _CERTIFICATE_REFUSED):
        # No answer, and trying again cannot help: final, as over REST.
        return SearchApiHTTPError(
            0,
            f"TLS certificate of {target.rpartition(':')[0]} could not be verified; fix the server's certificate "
            "or the CA bundle (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)",
            request_id=client_request_id,
            grpc_code=code.value[0],
            retryable=False,
        )
    metadata = {**_metadata(err.initial_metadata()), **_metadata(err.trailing_metadata())}
    return SearchApiHTTPError(
        HTTP_STATUS_OF.get(code.name, 500),
        details,
        request_id=next((metadata[k] for k in _REQUEST_ID_KEYS if metadata.get(k)), None) or client_request_id,
        grpc_code=code.value[0],
        retry_after=retry_after_seconds(metadata.get("retry-after")),
    )


def _metadata(pairs: Any) -> dict[str, str]:
    """Text metadata as a dict. Iterating yields ``(key, value)`` in every grpcio; ``dict()`` of the
    async side's ``Metadata`` raises ``KeyError`` on older ones (1.60)."""
    return {str(key).lower(): value for key, value in (pairs or ()) if isinstance(value, str)}
