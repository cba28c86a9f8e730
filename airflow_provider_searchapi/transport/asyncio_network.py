"""An httpcore network backend on asyncio's own transports, for the async REST path.

httpcore's default backend on asyncio goes through anyio: every read and write of every request
opens a cancel scope (``fail_after``) and asks sniffio which event loop runs, and TLS runs through
anyio's ``TLSStream``. With 64 requests in flight on one core that was a quarter of the HTTP layer's
CPU (1.4 → 1.0 ms per request, measured against the emulator, see docs/benchmarks.md). This
backend implements httpcore's public ``AsyncNetworkBackend`` interface with an ``asyncio.Protocol``:
a read waits on one future with one timer for its timeout; a request's small pieces are gathered
and leave in one write at the loop's next turn (one packet instead of four: 8 % less client CPU
and 11 % less server CPU per request), a large one goes straight to the transport and waits only when
the transport's buffer is full; TLS is asyncio's ``loop.start_tls``.

It runs on uvloop too, whose ``create_connection`` has no Happy Eyeballs: there, a host whose first
address does not answer (a dead IPv6 route) fails after the connect timeout instead of trying the next.
"""

from __future__ import annotations

import asyncio
import collections
import select
import ssl
from collections.abc import Iterable
from typing import Any, cast

import httpcore

#: Received bytes kept unread before the socket stops being read (a server talking past the answer).
_READ_BUFFER_LIMIT = 1024 * 1024
#: Request bytes up to this much are gathered and leave in one write (see AsyncioStream.write).
_GATHER_MAX_BYTES = 64 * 1024


class AsyncioNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections with ``loop.create_connection``; see the module's docstring."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = _StreamProtocol()
        options: dict[str, Any] = {"local_addr": (local_address, 0) if local_address else None}
        if isinstance(loop, asyncio.BaseEventLoop):  # uvloop's loop has no Happy Eyeballs
            options["happy_eyeballs_delay"] = 0.25  # try the next address (IPv4 after a dead IPv6) after 250 ms
        connecting = loop.create_connection(lambda: protocol, host, port, **options)
        try:
            transport, _ = await asyncio.wait_for(connecting, timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within {timeout} s") from None
        except OSError as err:
            raise httpcore.ConnectError(str(err) or type(err).__name__) from err
        try:
            for option in socket_options or ():
                transport.get_extra_info("socket").setsockopt(*option)
        except OSError as err:
            transport.abort()
            raise httpcore.ConnectError(f"socket option refused: {err}") from err
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _StreamProtocol(asyncio.Protocol):
    """Buffers what arrives and wakes the one reader or writer waiting (a connection carries one
    request at a time)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.can_write = True
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        self.buffered += len(data)
        if self.buffered > _READ_BUFFER_LIMIT and self.transport is not None and not self._reading_paused:
            self.transport.pause_reading()
            self._reading_paused = True
        _wake(self.read_waiter)

    def take(self, max_bytes: int) -> bytes:
        data = self.received.popleft()
        if len(data) > max_bytes:
            self.received.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self.buffered -= len(data)
        if self._reading_paused and self.buffered <= _READ_BUFFER_LIMIT // 2 and self.transport is not None:
            self.transport.resume_reading()
            self._reading_paused = False
        return data

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self.read_waiter)
        return False  # close the transport: an HTTP/1.1 client has nothing to say after the server's end

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        _wake(self.read_waiter)
        _wake(self.write_waiter)

    def pause_writing(self) -> None:
        self.can_write = False

    def resume_writing(self) -> None:
        self.can_write = True
        _wake(self.write_waiter)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection: an asyncio transport and the protocol that buffers its bytes.

    :param transport: the connected transport (plain or TLS).
    :param protocol: its protocol.
    """

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._gathered: list[bytes] = []
        self._gathered_size = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if self._gathered:  # the request is written: no need to wait for the loop's turn
            self._send_gathered()
        if not protocol.received and not protocol.eof and not protocol.lost:
            woken = await _wait(protocol, "read_waiter", timeout)
            if not woken and not protocol.received and not protocol.eof and not protocol.lost:
                raise httpcore.ReadTimeout(f"nothing received within {timeout} s")
        if protocol.received:
            return protocol.take(max_bytes)
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""  # the server closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        # A request is written as several pieces (the head, then each piece of the body, by
        # transport/http11.py or, through a proxy, httpcore); each write would be a send() and, the
        # socket being TCP_NODELAY, a packet of its own that the server reads on its own. Small pieces
        # are gathered and sent together at the loop's next turn (a request's pieces are written without
        # yielding to the loop), or before, when the answer is read.
        if self._gathered_size + len(buffer) <= _GATHER_MAX_BYTES:
            if not self._gathered:
                self._loop.call_soon(self._send_gathered)
            self._gathered.append(buffer)
            self._gathered_size += len(buffer)
            return
        if self._gathered:
            self._send_gathered()
        # The transport keeps what the socket does not take at once. Given bytes, Python 3.11's slices
        # that rest into a copy first (a megabyte per large image); a view of the (immutable) bytes
        # is not copied until it is buffered.
        self._transport.write(memoryview(buffer))
        # Wait while the transport's buffer is too full.
        while not protocol.can_write and not protocol.lost:
            if not await _wait(protocol, "write_waiter", timeout):
                raise httpcore.WriteTimeout(f"could not send within {timeout} s")
        if protocol.lost:
            raise httpcore.WriteError(str(protocol.error or "the connection was closed while sending"))

    def _send_gathered(self) -> None:
        """Hand the gathered pieces (if still there) to the transport as one write. Not when the
        connection is gone: as httpcore does with a failed write, the answer the server may have sent
        before closing is read."""
        gathered, self._gathered, self._gathered_size = self._gathered, [], 0
        if gathered and not self._protocol.lost and not self._transport.is_closing():
            self._transport.write(b"".join(gathered) if len(gathered) > 1 else gathered[0])

    async def aclose(self) -> None:
        # At once, as anyio does: close() would keep the socket until its unsent bytes drain (never,
        # after a write timeout) or, over TLS, wait for the server's close_notify.
        self._transport.abort()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        handshake = loop.start_tls(
            self._transport,
            self._protocol,
            ssl_context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout,
        )
        try:
            transport = await asyncio.wait_for(handshake, timeout)
        except asyncio.TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout} s") from None
        except OSError as err:  # ssl.SSLError and ConnectionError are OSErrors
            self._transport.abort()
            raise httpcore.ConnectError(str(err) or type(err).__name__) from err
        transport = cast(asyncio.Transport, transport)
        self._protocol.transport = transport  # pausing and resuming reads now go through TLS
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection that is readable was closed by the server
            protocol = self._protocol
            return bool(protocol.received) or protocol.eof or protocol.lost or _readable(self._transport)
        names = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
        return self._transport.get_extra_info(names[info]) if info in names else None


def _readable(transport: asyncio.Transport) -> bool:
    """Whether the socket has bytes (or the peer's end) that the loop has not handed over yet."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    if sock.fileno() < 0:  # closed
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


async def _wait(protocol: _StreamProtocol, waiter: str, timeout: float | None) -> bool:
    """Wait until the protocol wakes ``waiter``; False when ``timeout`` passed first."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    setattr(protocol, waiter, future)
    timer = loop.call_later(timeout, _wake, future, False) if timeout is not None else None
    try:
        return await future is not False
    finally:
        setattr(protocol, waiter, None)
        if timer is not None:
            timer.cancel()


def _wake(future: asyncio.Future[Any] | None, value: Any = None) -> None:
    if future is not None and not future.done():
        future.set_result(value)
