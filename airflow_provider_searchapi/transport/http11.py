"""One HTTP/1.1 connection of the async REST path, carrying one request at a time, over
:mod:`.asyncio_network`'s streams. Answers are read by httptools (llhttp, the C parser under uvicorn);
the request's head is written here, each header checked first.

A request is its head and body written, then the answer read. httpcore's connection does the same
behind two locks, made for tasks that share a connection, and each uncontended lock still yields to
the event loop: three extra turns of the loop per request. A connection here is lent to one request
at a time (see ``rest._ConnectionLender``), so it needs none of that. h11, the HTTP/1.1 engine of
httpx, then spoke it: its state machine and checks in Python cost 126-170 us of CPU per request and
answer on a 2-core VM, a fifth of the engine's CPU per image; written here and parsed by httptools,
the same exchange takes 7 us (docs/benchmarks.md).

Failures are httpcore's exceptions (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``...),
as httpx and the network streams raise them.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpcore
import httptools

#: Bytes asked of the stream per read (httpcore's figure).
READ_NUM_BYTES = 64 * 1024
#: The most bytes of an answer that are not its body: its head (1xx answers before it included),
#: chunk-size lines and trailers (the longest head httpcore accepts).
MAX_HEAD_BYTES = 100 * 1024

# RFC 9110: a method and a header name are tokens; a header value is visible characters (and
# obs-text) with spaces or tabs only inside; the target is visible characters. A line break in a
# value would let it write headers of its own.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?")
_TARGET = re.compile(rb"[\x21-\x7e]+")
#: Headers that decide where a request ends or what the connection becomes: one Host and one
#: Content-Length each, the others never (bodies are sent with their length).
_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade"})
_NOT_SENT = frozenset({b"transfer-encoding", b"connection", b"upgrade"})


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

        ``headers`` must hold ``Host`` and a ``Content-Length`` equal to the body's size. ``timeout``
        bounds connecting, each write and each read. The connection is closed when the exchange fails
        (or is cancelled) midway, or when the server wants it closed; otherwise it is ready for the
        next request.
        """
        if self._closed:
            raise httpcore.ConnectionNotAvailable("the connection is closed")
        reusable = False
        try:
            pieces = tuple(body)
            head = _request_head(method, target, headers, sum(map(len, pieces)))
            if self._stream is None:
                self._stream = await self._connect(timeout)
            sent = await self._send(head, pieces, timeout)
            reader = await self._receive(timeout, on_body)
            reusable = sent and reader.keep_alive and not reader.more
        finally:
            if not reusable:
                await self.aclose()
        return Answer(reader.status, reader.reason, reader.headers)

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

    async def _send(self, head: bytes, body: tuple[bytes, ...], timeout: float | None) -> bool:
        """Write the request; whether all of it went. A write that fails is let go, as httpcore does:
        a server may answer (413, 400...) and close before reading the whole body, and that answer is
        still read."""
        assert self._stream is not None
        write = self._stream.write
        try:
            await write(head, timeout)
            for piece in body:
                await write(piece, timeout)
        except httpcore.WriteError:
            return False
        return True

    async def _receive(self, timeout: float | None, on_body: Callable[[int, bytes], None]) -> _AnswerReader:
        """Read the answer (after any 1xx ones) to its end, handing its body on as it comes."""
        assert self._stream is not None
        reader = _AnswerReader()
        received = body_received = 0
        while not reader.complete:
            data = await self._stream.read(READ_NUM_BYTES, timeout)
            if not data:  # the server closed its end
                if reader.head_read and reader.ends_at_close:
                    reader.complete, reader.keep_alive = True, False
                    break
                if received == 0:
                    raise httpcore.RemoteProtocolError("the server closed the connection without answering")
                raise httpcore.RemoteProtocolError("the server closed the connection before the answer's end")
            received += len(data)
            reader.feed(data)
            chunks, reader.body = reader.body, []
            body_received += sum(map(len, chunks))
            # httptools gathers a header's (or a trailer's) value until its end: bounded here, a read at a time.
            if received - body_received > MAX_HEAD_BYTES:
                raise httpcore.RemoteProtocolError(
                    f"an answer's head (or its chunk lines and trailers) is over {MAX_HEAD_BYTES:,} bytes"
                )
            for chunk in chunks:
                on_body(reader.status, chunk)
        return reader


class _AnswerReader:
    """Reads one answer with httptools: its callbacks below gather the head and the body's pieces.
    Informational answers (1xx: 100 Continue, 103 Early Hints...) before it are skipped."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_read = False
        self.body: list[bytes] = []
        self.complete = False
        #: The server keeps the connection open after this answer.
        self.keep_alive = False
        #: Bytes came after the answer: the connection is not used again.
        self.more = False
        #: Neither Content-Length nor Transfer-Encoding: the body ends when the server closes.
        self.ends_at_close = False

    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as err:
            if self.complete:  # past a complete answer, the connection is just not used again
                self.more = True
            elif isinstance(err, httptools.HttpParserUpgrade):
                raise httpcore.RemoteProtocolError("the server switched to another protocol") from None
            else:
                raise httpcore.RemoteProtocolError(f"the answer is not valid HTTP/1.1: {err}") from None

    # httptools' callbacks. Past the answer (1xx ones aside), they only note that more came. A chunked
    # body's trailers come as headers too, after the head: they are not the answer's headers.
    def on_message_begin(self) -> None:
        if self.complete:
            self.more = True
        else:
            self.reason, self.headers = b"", []

    def on_status(self, reason: bytes) -> None:
        if not self.complete:
            self.reason += reason  # in pieces when the line comes in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_read:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if not self.complete and not 100 <= status < 200:
            self.status, self.head_read = status, True
            self.ends_at_close = not any(
                name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers
            )

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.head_read and not self.complete:
            self.complete, self.keep_alive = True, self._parser.should_keep_alive()


def _request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body_size: int) -> bytes:
    """The request line and headers, each checked; a header at fault is named, never quoted (it may
    be the credential)."""
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise httpcore.LocalProtocolError("the request's method or path holds characters HTTP does not allow")
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    framing: dict[bytes, bytes] = {}
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise httpcore.LocalProtocolError(
                "a header holds characters HTTP does not allow (line breaks, control characters, spaces at its ends)"
            )
        lowered = name.lower()
        if lowered in _FRAMING:
            if lowered in _NOT_SENT:
                raise httpcore.LocalProtocolError(
                    f"{name.decode()} is not sent here: a body goes with its Content-Length"
                )
            if lowered in framing:
                raise httpcore.LocalProtocolError(f"{name.decode()} is twice in the request")
            framing[lowered] = value
        lines += (name, b": ", value, b"\r\n")
    if b"host" not in framing or framing.get(b"content-length") != str(body_size).encode():
        raise httpcore.LocalProtocolError("a request needs a Host header and a Content-Length equal to its body's size")
    lines.append(b"\r\n")
    return b"".join(lines)
