"""gRPC transport: ``yandex.cloud.searchapi.v2.ImageSearchService/SearchByImage``, sync and async.

Same contract as :class:`~airflow_provider_searchapi.transport.rest.RestTransport`: the same models,
credentials (sent as ``authorization`` metadata), retry policy and rate limiter, and errors mapped to
:class:`SearchApiHTTPError` with the HTTP status of the same meaning (so retry decisions match) and the
gRPC code. Needs the ``grpc`` extra: ``pip install 'airflow-provider-searchapi[grpc]'``.
"""

from __future__ import annotations

import uuid
from types import ModuleType
from typing import Any

import httpx

from airflow_provider_searchapi.exceptions import SearchApiConfigError, SearchApiHTTPError, SearchApiResponseError

try:
    import google.protobuf  # noqa: F401 - needed by grpc_messages
    import grpc
    import grpc.aio
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise SearchApiConfigError(
        "transport", "grpc needs the grpc extra: pip install 'airflow-provider-searchapi[grpc]'"
    ) from err

from airflow_provider_searchapi.aio import PerEventLoop
from airflow_provider_searchapi.config import grpc_target
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
    "UNIMPLEMENTED": 404,  # no such method there: a wrong endpoint, which REST answers with 404
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

#: What gRPC core says when the TLS handshake fails on the server's certificate (BoringSSL's words).
_CERTIFICATE_REFUSED = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "Hostname Verification Check failed")
#: What gRPC core says when no server could be reached (REST's status 0, "no answer").
_NOT_REACHED = ("failed to connect to all addresses", "DNS resolution failed", "errors resolving")


class GrpcTransport:
    """Sends search requests over gRPC.

    :param endpoint: ``host:port`` (TLS), ``https://host:port`` (TLS) or ``http://host:port`` (plaintext).
    :param auth: the connection's credential (its header value goes into the ``authorization`` metadata).
    :param caller: runs each call's attempts (credential, retries, rate limit, counters).
    :param timeout: seconds per call (the gRPC deadline).
    :param verify_tls: must stay on: gRPC offers no switch to skip certificate checks.
    """

    def __init__(
        self, *, endpoint: str, auth: httpx.Auth, caller: Caller, timeout: float, verify_tls: bool = True
    ) -> None:
        self.target, self._secure = grpc_target(endpoint)  # plaintext (http://): a local emulator
        if self._secure and not verify_tls:
            raise SearchApiConfigError("verify_tls", "cannot be false with transport=grpc over TLS")
        self._auth = auth
        self._caller = caller
        self._timeout = timeout
        self._channel: Any = None
        self._achannels = PerEventLoop(lambda: self._open(grpc.aio))

    def _open(self, module: ModuleType) -> Any:
        """A channel of ``grpc`` or ``grpc.aio``."""
        options = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
        if self._secure:
            return module.secure_channel(self.target, grpc.ssl_channel_credentials(), options=options)
        return module.insecure_channel(self.target, options=options)

    def search(self, request: SearchRequest) -> ImageSearchResult:
        """Send one request (with retries) and return the parsed page."""
        message = request_message(request)
        return self._caller.call(self._auth, lambda header: self._send(message, header))

    async def asearch(self, request: SearchRequest) -> ImageSearchResult:
        """Send one request (with retries) without blocking the event loop."""
        message = request_message(request)
        return await self._caller.acall(self._auth, lambda header: self._asend(message, header))

    def _send(self, message: Any, header: str) -> ImageSearchResult:
        if self._channel is None:
            self._channel = self._open(grpc)
        request_id = str(uuid.uuid4())
        try:
            answer = _method(self._channel)(message, timeout=self._timeout, metadata=_metadata(header, request_id))
        except grpc.RpcError as err:
            raise _error(err, request_id, self.target, header, self._timeout) from None
        return result_from_message(answer)

    async def _asend(self, message: Any, header: str) -> ImageSearchResult:
        method = _method(self._achannels.get())
        request_id = str(uuid.uuid4())
        try:
            answer = await method(message, timeout=self._timeout, metadata=_metadata(header, request_id))
        except grpc.aio.AioRpcError as err:
            raise _error(err, request_id, self.target, header, self._timeout) from None
        return result_from_message(answer)

    def close(self) -> None:
        """Close the sync channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def aclose(self) -> None:
        """Close the running event loop's async channel."""
        channel = self._achannels.pop()
        if channel is not None:
            await channel.close()


def _method(channel: Any) -> Any:
    return channel.unary_unary(
        METHOD,
        request_serializer=ImageSearchByImageRequest.SerializeToString,
        response_deserializer=ImageSearchByImageResponse.FromString,
    )


def _metadata(header: str, request_id: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", header), ("x-client-request-id", request_id))


def _error(err: Any, client_request_id: str, target: str, header: str, timeout: float) -> Exception:
    """Our error for a failed call, with the HTTP status of the same meaning and the gRPC code.

    :param err: the ``grpc.RpcError`` (sync) or ``grpc.aio.AioRpcError`` of the call.
    :param client_request_id: the ``x-client-request-id`` we sent, quoted when the server gave none.
    :param target: ``host:port`` called, named when its certificate is refused.
    :param header: the ``authorization`` sent: the server may quote its credential, which is cut out.
    :param timeout: the call's deadline, in seconds.
    """
    code = err.code()
    credential = header.partition(" ")[2]
    details = err.details() or code.name
    details = details.replace(credential, "[redacted]") if credential else details
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return SearchApiResponseError(f"answer larger than {MAX_RESPONSE_BYTES:,} bytes; not read")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":  # gRPC's words for ours
        return SearchApiHTTPError(0, f"no answer within {timeout:g} s", request_id=client_request_id)
    if code == grpc.StatusCode.UNAVAILABLE and any(words in details for words in _CERTIFICATE_REFUSED):
        return SearchApiHTTPError(  # trying again cannot help: final, as over REST
            0,
            f"TLS certificate of {target.rpartition(':')[0]} could not be verified; fix the server's certificate "
            "or the CA bundle (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)",
            request_id=client_request_id,
            grpc_code=code.value[0],
            retryable=False,
        )
    # Text metadata only. Iterating yields (key, value) in every grpcio; dict() of grpc.aio's Metadata
    # raises KeyError on older ones (1.60).
    metadata = {
        str(key).lower(): value
        for key, value in (*(err.initial_metadata() or ()), *(err.trailing_metadata() or ()))
        if isinstance(value, str)
    }
    unreached = code == grpc.StatusCode.UNAVAILABLE and any(words in details for words in _NOT_REACHED)
    return SearchApiHTTPError(
        0 if unreached else HTTP_STATUS_OF.get(code.name, 500),
        details,
        request_id=metadata.get("x-request-id") or metadata.get("x-server-trace-id") or client_request_id,
        grpc_code=code.value[0],
        retry_after=retry_after_seconds(metadata.get("retry-after")),
    )
