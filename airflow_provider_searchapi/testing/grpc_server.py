"""The emulator's gRPC front end: ``ImageSearchService/SearchByImage`` on 127.0.0.1, plaintext.

It hands every call to :meth:`Emulator.search`, the logic the REST front end uses, so both transports
meet the same checks, results, knobs and counters. Needs ``grpcio`` (the ``grpc`` extra).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from airflow_provider_searchapi.transport.grpc_messages import (
    FAMILY_MODES,
    METHOD,
    ImageSearchByImageRequest,
    ImageSearchByImageResponse,
    enum_name,
)

if TYPE_CHECKING:
    from airflow_provider_searchapi.testing.emulator import Emulator

#: HTTP status of an emulator answer → the gRPC status the real service would give.
GRPC_CODE_OF = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class GrpcFrontEnd:
    """A ``grpc.aio`` server in its own thread and event loop, serving one emulator.

    :param emulator: the emulator whose logic answers the calls.
    :param host: address to listen on.
    """

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1") -> None:
        self.emulator = emulator
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="emulator-grpc")
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the ``grpc_endpoint`` extra of a connection pointing here."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> GrpcFrontEnd:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        handler = grpc.method_handlers_generic_handler(
            METHOD.split("/")[1],
            {
                "SearchByImage": grpc.unary_unary_rpc_method_handler(
                    self._search_by_image,
                    request_deserializer=ImageSearchByImageRequest.FromString,
                    response_serializer=ImageSearchByImageResponse.SerializeToString,
                )
            },
        )
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port(f"{self.host}:0")
        await self._server.start()

    async def _search_by_image(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        outcome = await self.emulator.search(metadata.get("authorization", ""), body_from_request(request))
        if outcome.drop:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        if outcome.raw is not None:  # a malformed REST body has no gRPC twin: an internal error
            await context.abort(grpc.StatusCode.INTERNAL, "malformed answer")
        if outcome.status != 200:
            trailers = tuple(
                (k.lower(), v) for k, v in outcome.headers.items() if k.lower() in ("x-request-id", "retry-after")
            )
            context.set_trailing_metadata(trailers)
            code = GRPC_CODE_OF.get(outcome.status, grpc.StatusCode.UNKNOWN)
            await context.abort(code, outcome.body.get("message", ""))
        return response_from_body(outcome.body)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace=0.5), self._loop).result(timeout=30)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def body_from_request(message: Any) -> dict[str, Any]:
    """The request in proto3-JSON shape (as REST carries it), for the emulator's shared logic: unset
    fields left out, bytes in base64, int64 as a string, enums by name (mapped by hand: ``json_format``
    is several times slower)."""
    body: dict[str, Any] = {}
    if message.folder_id:
        body["folderId"] = message.folder_id
    source = message.WhichOneof("source")
    if source == "data":
        body["data"] = base64.b64encode(message.data).decode("ascii")
    elif source is not None:
        body[source] = getattr(message, source)
    if message.page:
        body["page"] = str(message.page)
    if message.site:
        body["site"] = message.site
    if message.family_mode:
        body["familyMode"] = enum_name(FAMILY_MODES, message.family_mode)
    return body


def response_from_body(body: dict[str, Any]) -> Any:
    """A protobuf response from a proto3-JSON result (what the emulator produces)."""
    message = ImageSearchByImageResponse(
        page=int(body.get("page", 0)), max_page=int(body.get("maxPage", 0)), id=body.get("id", "")
    )
    for image in body.get("images", ()):
        message.images.add(
            url=image.get("url", ""),
            format=image.get("format", "IMAGE_FORMAT_UNSPECIFIED"),
            width=int(image.get("width", 0)),
            height=int(image.get("height", 0)),
            passage=image.get("passage", ""),
            host=image.get("host", ""),
            page_title=image.get("pageTitle", ""),
            page_url=image.get("pageUrl", ""),
        )
    return message
