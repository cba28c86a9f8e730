"""One HTTP/1.1 connection of the async REST path (answers read by httptools, on an asyncio stream),
against small servers on 127.0.0.1 that each answer in one particular way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpcore
import pytest

from airflow_provider_searchapi.transport.asyncio_network import AsyncioNetworkBackend
from airflow_provider_searchapi.transport.http11 import Answer, Http11Connection

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    return head, await reader.readexactly(length)


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[tuple[httpcore.Origin, list[int]]]:
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield httpcore.Origin(b"http", b"127.0.0.1", port), connections
    finally:
        server.close()


async def _post(connection: Http11Connection, *pieces: bytes, timeout: float = 5.0) -> tuple[Answer, bytes]:
    received: list[bytes] = []
    headers = [(b"Host", b"127.0.0.1"), (b"Content-Length", str(sum(map(len, pieces))).encode())]
    answer = await connection.request(
        b"POST", b"/v2/image/search_by_image", headers, pieces, timeout=timeout, on_body=lambda _, b: received.append(b)
    )
    return answer, b"".join(received)


def _connection(origin: httpcore.Origin) -> Http11Connection:
    return Http11Connection(origin, ssl_context=None, network_backend=AsyncioNetworkBackend())  # type: ignore[arg-type]


async def _echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        _, body = await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Seen: yes\r\n\r\n%b" % (len(body), body))
        await writer.drain()


async def test_requests_in_turn_share_one_connection_and_bodies_arrive_whole():
    async with _server(_echo_forever) as (origin, connections):
        connection = _connection(origin)
        for n in range(3):
            answer, body = await _post(connection, b'{"folderId":"f","data":"', b"A" * (200_000 * n + 1), b'"}')
            assert answer.status == 200 and answer.reason == b"OK" and (b"X-Seen", b"yes") in answer.headers
            assert body == b'{"folderId":"f","data":"' + b"A" * (200_000 * n + 1) + b'"}'
        assert connections == [1] and not connection.is_closed()
        await connection.aclose()
        assert connection.is_closed()


async def test_a_server_asking_to_close_gets_the_connection_closed():
    async def close_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()

    async with _server(close_after_one) as (origin, _):
        connection = _connection(origin)
        answer, body = await _post(connection, b"{}")
        assert (answer.status, body) == (200, b"{}")
        assert connection.is_closed()
        with pytest.raises(httpcore.ConnectionNotAvailable):
            await _post(connection, b"{}")


async def test_informational_answers_are_skipped():
    async def continue_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\nRetry-After: 1\r\n\r\nslow")
        await writer.drain()
        await _read_request(reader)

    async with _server(continue_first) as (origin, _):
        answer, body = await _post(_connection(origin), b"{}")
        assert (answer.status, body) == (429, b"slow") and (b"Retry-After", b"1") in answer.headers


async def test_an_answer_sent_before_the_body_was_read_is_still_read():
    async def refuse_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
        await writer.drain()
        writer.transport.abort()  # the unread body makes the client's writes fail

    async with _server(refuse_early) as (origin, _):
        connection = _connection(origin)
        answer, body = await _post(connection, b"x" * (16 * 1024 * 1024))
        assert (answer.status, body) == (413, b"too big!")
        assert connection.is_closed()


def _answering(*answers: bytes, then_close: bool = False) -> Handler:
    """A server that answers each request in turn with the next of ``answers`` (sent as they are)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await _read_request(reader)
            writer.write(answer)
            await writer.drain()
        if not then_close:
            await asyncio.sleep(30)

    return handler


async def test_a_chunked_answer_arrives_whole_and_the_connection_is_kept():
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n5\r\n":1}\n\r\n0\r\n\r\n'
    async with _server(_answering(chunked, chunked)) as (origin, connections):
        connection = _connection(origin)
        for _ in range(2):
            answer, body = await _post(connection, b"{}")
            assert (answer.status, body) == (200, b'{"a":1}\n')
        assert connections == [1] and not connection.is_closed()


async def test_trailers_are_not_headers_and_are_bounded_too():
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-Id: head\r\n\r\n"
        b"2\r\n{}\r\n0\r\nContent-Encoding: gzip\r\nX-Request-Id: trailer\r\n\r\n"
    )
    endless = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: " + b"x" * 300_000
    async with _server(_answering(chunked, endless)) as (origin, _):
        connection = _connection(origin)
        answer, body = await _post(connection, b"{}")
        assert (answer.status, body) == (200, b"{}") and not connection.is_closed()
        assert answer.headers == [(b"Transfer-Encoding", b"chunked"), (b"X-Request-Id", b"head")]
        with pytest.raises(httpcore.RemoteProtocolError, match="chunk lines and trailers"):
            await _post(connection, b"{}")
        assert connection.is_closed()


async def test_an_answer_arriving_a_byte_at_a_time_is_read_whole():
    answers = b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Fine Thanks\r\nContent-Length: 7\r\nX-A: b c\r\n\r\n{"a":1}'

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        for byte in answers:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.001)
        await asyncio.sleep(30)

    async with _server(dribble) as (origin, _):
        answer, body = await _post(_connection(origin), b"{}")
        assert (answer.status, answer.reason, answer.headers, body) == (
            200,
            b"Fine Thanks",
            [(b"Content-Length", b"7"), (b"X-A", b"b c")],
            b'{"a":1}',
        )


async def test_a_failure_while_handing_the_body_on_closes_the_connection():
    async with _server(_echo_forever) as (origin, _):
        connection = _connection(origin)

        def refuse(status: int, chunk: bytes) -> None:
            raise ValueError("too much")

        headers = [(b"Host", b"127.0.0.1"), (b"Content-Length", b"2")]
        with pytest.raises(ValueError, match="too much"):
            await connection.request(b"POST", b"/", headers, [b"{}"], timeout=5.0, on_body=refuse)
        assert connection.is_closed()


async def test_an_http_1_0_answer_asking_to_keep_alive_keeps_the_connection():
    answer = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"
    async with _server(_answering(answer, answer)) as (origin, connections):
        connection = _connection(origin)
        for _ in range(2):
            assert (await _post(connection, b"{}"))[1] == b"{}"
        assert connections == [1] and not connection.is_closed()


async def test_an_answer_without_a_length_ends_when_the_server_closes():
    async with _server(
        _answering(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end", then_close=True)
    ) as (
        origin,
        _,
    ):
        connection = _connection(origin)
        answer, body = await _post(connection, b"{}")
        assert (answer.status, body) == (200, b"to the end")
        assert connection.is_closed()


async def test_an_http_1_0_answer_closes_the_connection():
    async with _server(_answering(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")) as (origin, _):
        connection = _connection(origin)
        assert (await _post(connection, b"{}"))[1] == b"{}"
        assert connection.is_closed()


@pytest.mark.parametrize(
    "after",
    [
        b"HTTP/1.1 200 OK\r\n",
        b"SMTP ready\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    ],
    ids=["another-answer", "not-http", "an-upgrade"],
)
async def test_bytes_after_the_answer_close_the_connection_after_it(after: bytes):
    async with _server(_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}" + after)) as (origin, _):
        connection = _connection(origin)
        answer, body = await _post(connection, b"{}")
        assert (answer.status, answer.headers, body) == (200, [(b"Content-Length", b"2"), (b"X-A", b"b")], b"{}")
        assert connection.is_closed()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SMTP ready\r\n\r\n", "not valid HTTP/1.1"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "not valid HTTP/1.1"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", "another protocol"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"X-Filler: " + b"x" * 120_000 + b"\r\n\r\n",
            "head \\(or its chunk lines and trailers\\) is over",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"X-Filler: x\r\n" * 9_000 + b"\r\n",
            "head \\(or its chunk lines and trailers\\) is over",
        ),
    ],
    ids=["not-http", "two-lengths", "upgrade", "huge-header", "many-headers"],
)
async def test_an_answer_that_is_not_well_formed_is_a_protocol_error(answer: bytes, message: str):
    async with _server(_answering(answer)) as (origin, _):
        connection = _connection(origin)
        with pytest.raises(httpcore.RemoteProtocolError, match=message):
            await _post(connection, b"{}")
        assert connection.is_closed()


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Length", b"2")],
        [(b"Host", b"127.0.0.1"), (b"Content-Length", b"3")],
        [(b"Host", b"127.0.0.1"), (b"Content-Length", b"2"), (b"X-Bad Name", b"v")],
        [(b"Host", b"127.0.0.1"), (b"Content-Length", b"2"), (b"Authorization", b"Bearer t1.secret ")],
        [(b"Host", b"127.0.0.1"), (b"Content-Length", b"2"), (b"Content-Length", b"3")],
        [(b"Host", b"127.0.0.1"), (b"Host", b"example.com"), (b"Content-Length", b"2")],
        [(b"Host", b"127.0.0.1"), (b"Content-Length", b"2"), (b"Transfer-Encoding", b"chunked")],
    ],
    ids=["no-host", "wrong-length", "bad-name", "trailing-space", "two-lengths", "two-hosts", "chunked"],
)
async def test_a_request_http_does_not_allow_is_refused_before_connecting(headers: list[tuple[bytes, bytes]]):
    async with _server(_echo_forever) as (origin, connections):
        connection = _connection(origin)
        with pytest.raises(httpcore.LocalProtocolError) as info:
            await connection.request(b"POST", b"/", headers, [b"{}"], timeout=5.0, on_body=lambda *_: None)
        assert "secret" not in str(info.value) and connections == []


async def test_a_server_closing_without_an_answer_is_a_protocol_error_and_closes_the_connection():
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)

    async with _server(hang_up) as (origin, _):
        connection = _connection(origin)
        with pytest.raises(httpcore.RemoteProtocolError, match="without answering"):
            await _post(connection, b"{}")
        assert connection.is_closed()


async def test_an_answer_cut_short_is_a_protocol_error():
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}")
        await writer.drain()

    async with _server(cut_short) as (origin, _):
        connection = _connection(origin)
        with pytest.raises(httpcore.RemoteProtocolError):
            await _post(connection, b"{}")
        assert connection.is_closed()


async def test_a_request_cancelled_while_waiting_closes_its_connection():
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(30)

    async with _server(never_answer) as (origin, _):
        connection = _connection(origin)
        waiting = asyncio.ensure_future(_post(connection, b"{}"))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert connection.is_closed()


async def test_an_idle_connection_the_server_closed_has_expired():
    may_close = asyncio.Event()

    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()
        await may_close.wait()

    async with _server(one_then_close) as (origin, _):
        connection = _connection(origin)
        await _post(connection, b"{}")
        await asyncio.sleep(0.05)
        assert not connection.has_expired()
        may_close.set()
        for _ in range(100):  # the server's handler returns and closes its end
            await asyncio.sleep(0.01)
            if connection.has_expired():
                break
        assert connection.has_expired() and not connection.is_closed()


@pytest.mark.parametrize("character", [b"\r\n", b"\n", b"\r", b"\x00", b"\x7f", b"\x1b"])
async def test_a_header_http_does_not_allow_is_refused_without_quoting_it(character: bytes):
    async with _server(_echo_forever) as (origin, connections):
        connection = _connection(origin)
        await _post(connection, b"{}")  # an open connection, closed by the failure
        headers = [
            (b"Host", b"127.0.0.1"),
            (b"Content-Length", b"2"),
            (b"Authorization", b"Api-Key secretpart1" + character + b"X-Injected: secretpart2"),
        ]
        with pytest.raises(httpcore.LocalProtocolError, match="characters HTTP does not allow") as info:
            await connection.request(b"POST", b"/", headers, [b"{}"], timeout=5.0, on_body=lambda *_: None)
        assert "secretpart" not in str(info.value) and info.value.__cause__ is None
        assert connection.is_closed() and connections == [1]


def test_the_transport_reports_an_unsendable_request_as_final_without_its_headers():
    from airflow_provider_searchapi.ratelimit import RateLimiter
    from airflow_provider_searchapi.transport.rest import RestTransport

    transport = RestTransport(endpoint="http://127.0.0.1:9", auth=None, limiter=RateLimiter(10), timeout=1.0)  # type: ignore[arg-type]
    error = transport._transport_error(httpcore.LocalProtocolError("Illegal header value b'Api-Key secretpart'"), "rid")
    assert error.status == 0 and not error.retryable and "secretpart" not in str(error)
    assert "characters HTTP does not allow" in str(error)
