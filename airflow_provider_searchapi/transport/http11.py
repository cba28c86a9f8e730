"""One HTTP/1.1 connection of the async REST path, carrying one request at a time, spoken with h11
(the HTTP/1.1 engine under httpx and httpcore) over :mod:`.asyncio_network`'s streams.

httpcore's connection does the same behind two locks, made for tasks that share a connection, and
each uncontended lock still yields to the event loop (anyio's checkpoint): three extra turns of the
loop per request, with cancel scopes around them and tracing hooks at every step. A connection here
is lent to one request at a time (see ``rest._ConnectionLender``), so it needs none of that: a
request is the h11 events written, then the answer's events read (measured: 17 % less client CPU
per image in the engine, 64 in flight, see docs/benchmarks.md).

Failures are httpcore's exceptions (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``...),
as httpx and the network streams raise them.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import h11
import httpcore

#: Bytes asked of the stream per read (httpcore's figure).
READ_NUM_BYTES = 64 * 1024
#: The longest answer head accepted (httpcore's figure).
MAX_HEAD_BYTES = 100 * 1024


@dataclass(frozen=True)
class Answer:
    """The head of an answer (its body went to the ``on_body`` callback).

    :param status: HTTP status.
    :param reason: the status line's reason phrase.
    :param headers: the headers as sent, names and values in bytes.
    """

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]


class Http11Connection:
    """A connection to one origin, opened by its first request, kept open between requests while the
    server allows it.

    :param origin: scheme, host and port to connect to.
    :param ssl_context: TLS settings for ``https``; its ALPN protocols should be HTTP/1.1 alone (the
        REST transport sets them so), and a server that picks another is refused.
    :param network_backend: opens the TCP connection.
    """

    def __init__(
        self, origin: httpcore.Origin, ssl_context: ssl.SSLContext, network_backend: httpcore.AsyncNetworkBackend
    ) -> None:
        self._origin = origin
        self._ssl_context = ssl_context
        self._backend = network_backend
        self._stream: httpcore.AsyncNetworkStream | None = None
        self._h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._closed = False

    def is_closed(self) -> bool:
        """Closed by a failure, by the server's ``Connection: close``, or by :meth:`aclose`."""
        return self._closed

    def has_expired(self) -> bool:
        """Whether an idle connection was closed by the server meanwhile (its socket reads the end)."""
        return self._stream is not None and bool(self._stream.get_extra_info("is_readable"))

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Iterable[bytes],
        *,
        timeout: float | None,
        on_body: Callable[[int, bytes], None],
    ) -> Answer:
        """Send one request and read its whole answer, handing the body's bytes to ``on_body`` (with
        the answer's status).

        ``timeout`` bounds connecting, each write and each read. The connection is closed when the
        exchange fails (or is cancelled) midway, or when the server wants it closed; otherwise it is
        ready for the next request.
        """
        if self._closed:
            raise httpcore.ConnectionNotAvailable("the connection is closed")
        finished = False
        try:
            if self._stream is None:
                self._stream = await self._connect(timeout)
            await self._send(method, target, headers, body, timeout)
            answer = await self._receive_head(timeout)
            await self._receive_body(timeout, lambda chunk: on_body(answer.status, chunk))
            finished = True
        except h11.RemoteProtocolError as err:
            raise httpcore.RemoteProtocolError(str(err)) from None
        except h11.LocalProtocolError:  # its message would quote the header at fault: the credential, maybe
            raise httpcore.LocalProtocolError(
                "h11 refused to send the request (a header holds characters HTTP does not allow)"
            ) from None
        finally:
            connection = self._h11
            if finished and connection.our_state is h11.DONE and connection.their_state is h11.DONE:
                connection.start_next_cycle()
            else:
                await self.aclose()
        return answer

    async def aclose(self) -> None:
        """Close the connection at once."""
        self._closed = True
        if self._stream is not None:
            await self._stream.aclose()

    async def _connect(self, timeout: float | None) -> httpcore.AsyncNetworkStream:
        host = self._origin.host.decode("ascii")
        stream = await self._backend.connect_tcp(host, self._origin.port, timeout=timeout)
        if self._origin.scheme == b"https":
            try:
                stream = await stream.start_tls(self._ssl_context, server_hostname=host, timeout=timeout)
                protocol = stream.get_extra_info("ssl_object").selected_alpn_protocol()
                if protocol not in (None, "http/1.1"):
                    raise httpcore.ConnectError(f"the server chose {protocol!r} where only HTTP/1.1 is spoken")
            except BaseException:
                await stream.aclose()
                raise
        return stream

    async def _send(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Iterable[bytes],
        timeout: float | None,
    ) -> None:
        """Write the request. A write that fails is let go, as httpcore does: a server may answer
        (413, 400...) and close before reading the whole body, and that answer is still read."""
        assert self._stream is not None
        connection, write = self._h11, self._stream.write
        try:
            await write(connection.send(h11.Request(method=method, target=target, headers=headers)), timeout)
            for piece in body:
                await write(connection.send(h11.Data(data=piece)), timeout)
            await write(connection.send(h11.EndOfMessage()), timeout)
        except httpcore.WriteError:
            pass

    async def _receive_head(self, timeout: float | None) -> Answer:
        while True:
            event = await self._next_event(timeout)
            if isinstance(event, h11.Response):
                return Answer(event.status_code, event.reason, event.headers.raw_items())
            if not isinstance(event, h11.InformationalResponse):  # 1xx (100 Continue...): skipped
                raise httpcore.RemoteProtocolError(f"{type(event).__name__} where an answer was due")

    async def _receive_body(self, timeout: float | None, on_body: Callable[[bytes], None]) -> None:
        while True:
            event = await self._next_event(timeout)
            if isinstance(event, h11.Data):
                on_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise httpcore.RemoteProtocolError(f"{type(event).__name__} inside an answer's body")

    async def _next_event(self, timeout: float | None) -> h11.Event:
        assert self._stream is not None
        connection = self._h11
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            data = await self._stream.read(READ_NUM_BYTES, timeout)
            if not data and connection.their_state is h11.SEND_RESPONSE:
                raise httpcore.RemoteProtocolError("the server closed the connection without answering")
            connection.receive_data(data)
