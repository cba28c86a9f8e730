"""The async REST path's network layer: httpcore connections on asyncio transports.

Each test runs a small HTTP/1.1 server on 127.0.0.1 that misbehaves in one way (closes idle
connections, reads slowly, never answers, never reads) and checks what the client does about it.
The hook-level tests run the emulator with gzipped answers.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpcore
import httpx
import pytest

from airflow_provider_searchapi.exceptions import SearchApiResponseError
from airflow_provider_searchapi.transport.asyncio_network import AsyncioNetworkBackend
from airflow_provider_searchapi.transport.rest import MAX_RESPONSE_BYTES, _decoded
from tests.conftest import make_jpeg

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's body (headers read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    return await reader.readexactly(length)


async def _answer(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    await writer.drain()


class _Server:
    current: _Server

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.received = 0
        self.heads: list[bytes] = []
        self.finished = asyncio.Event()  # the last connection's handler returned
        self.server: asyncio.Server | None = None
        _Server.current = self

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
                self.finished.set()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v2/image/search_by_image"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def _post(pool: httpcore.AsyncConnectionPool, url: str, body: bytes, timeout: float = 5.0) -> bytes:
    headers = [(b"Host", b"127.0.0.1"), (b"Content-Length", str(len(body)).encode())]
    extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
    response = await pool.handle_async_request(
        httpcore.Request(b"POST", url, headers=headers, content=body, extensions=extensions)
    )
    try:
        return b"".join([chunk async for chunk in response.aiter_stream()])
    finally:
        await response.aclose()


def _pool() -> httpcore.AsyncConnectionPool:
    return httpcore.AsyncConnectionPool(max_connections=1, network_backend=AsyncioNetworkBackend())


async def test_an_idle_connection_the_server_closed_is_not_reused():
    async def one_request_then_close(reader, writer):
        await _answer(writer, b"answer for %d bytes" % len(await _read_request(reader)))

    server = _Server(one_request_then_close)
    async with server as url, _pool() as pool:
        assert await _post(pool, url, b"first") == b"answer for 5 bytes"
        await asyncio.sleep(0.2)  # the server's close arrives while the connection is idle
        assert await _post(pool, url, b"second!") == b"answer for 7 bytes"
    assert server.connections == 2


async def test_a_body_larger_than_the_socket_buffers_waits_for_a_slow_reader():
    async def slow_reader(reader, writer):
        await asyncio.sleep(0.3)  # the client's writes fill the buffers and must wait
        body = await _read_request(reader)
        await _answer(writer, b"%d %08x" % (len(body), zlib.crc32(body)))

    body = bytes(range(256)) * (48 * 1024)  # 12 MiB
    async with _Server(slow_reader) as url, _pool() as pool:
        assert await _post(pool, url, body) == b"%d %08x" % (len(body), zlib.crc32(body))


async def test_no_answer_is_a_read_timeout_and_no_reading_a_write_timeout():
    async def never_answers(reader, writer):
        await _read_request(reader)
        await asyncio.sleep(10)

    async with _Server(never_answers) as url, _pool() as pool:
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpcore.ReadTimeout):
            await _post(pool, url, b"x", timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 3
    body = b"\0" * (96 * 1024 * 1024)  # more than loopback buffers hold
    server = _Server(reads_after_a_while)
    async with server as url, _pool() as pool:
        with pytest.raises(httpcore.WriteTimeout):
            await _post(pool, url, body, timeout=0.3)
        await asyncio.wait_for(server.finished.wait(), 10)
    # The connection was dropped at once, not left open to send the megabytes it had buffered.
    assert server.received < len(body)


async def reads_after_a_while(reader, writer):
    await asyncio.sleep(1.0)
    while True:
        try:
            chunk = await reader.read(1 << 20)
        except ConnectionError:
            return
        if not chunk:
            return
        _Server.current.received += len(chunk)


def _data_packets_received(sock: socket.socket) -> int:
    """TCP segments with data that arrived on ``sock`` (Linux's ``tcp_info.tcpi_data_segs_in``)."""
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 152)[0]


async def _in_pieces(pieces: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts packets with Linux's TCP_INFO")
async def test_a_request_in_pieces_leaves_in_one_packet_unless_it_is_large():
    """httpcore writes a request's head and each piece of its body apart; small ones leave together."""
    seen: list[tuple[bytes, int]] = []

    async def answers_and_counts_packets(reader, writer):
        sock = writer.get_extra_info("socket")
        while True:
            body = await _read_request(reader)
            seen.append((body, _data_packets_received(sock)))
            await _answer(writer, b"ok")

    small = (b'{"folderId":"f","data":"', b"QUJD" * 1000, b'"}')
    large = (b'{"folderId":"f","data":"', bytes(range(256)) * 1024, b'"}')  # 256 KiB: sent as it comes
    async with _Server(answers_and_counts_packets) as url, _pool() as pool:
        for pieces in (small, large, small):
            headers = [(b"Host", b"127.0.0.1"), (b"Content-Length", str(sum(map(len, pieces))).encode())]
            request = httpcore.Request(b"POST", url, headers=headers, content=_in_pieces(pieces))
            response = await pool.handle_async_request(request)
            assert await response.aread() == b"ok"
            await response.aclose()
    assert [body for body, _ in seen] == [b"".join(pieces) for pieces in (small, large, small)]
    counts = [count for _, count in seen]
    if counts[0] == 0:
        pytest.skip("this kernel does not count the packets a socket receives (tcpi_data_segs_in)")
    packets = [counts[0], counts[1] - counts[0], counts[2] - counts[1]]
    assert packets[0] == 1 and packets[2] == 1  # head and three pieces of body: one packet
    assert packets[1] > 2


async def test_gathered_pieces_leave_without_waiting_for_a_read():
    """Gathered pieces go out at the loop's next turn, whether or not an answer is read."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def records(reader, writer):
        while chunk := await reader.read(1 << 16):
            received.put_nowait(chunk)

    async with _Server(records) as url:
        port = int(url.split(":")[2].split("/")[0])
        stream = await AsyncioNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5)
        await stream.write(b"POST / HTTP/1.1\r\n")
        await stream.write(b"Content-Length: 2\r\n\r\nok")
        got = b""
        while len(got) < 40:
            got += await asyncio.wait_for(received.get(), 5)
        assert got == b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"
        await stream.aclose()


async def test_a_refused_connection_is_a_connect_error():
    async with _Server(lambda reader, writer: _answer(writer, b"")) as url:
        pass  # closed: nothing listens on its port any more
    async with _pool() as pool:
        with pytest.raises(httpcore.ConnectError):
            await _post(pool, url, b"x")


def test_gzipped_answers_are_read_on_both_paths(make_hook, searchapi_emulator):
    hook = make_hook("api_key")
    image = make_jpeg(5)
    plain = hook.search_by_image(image=image)
    searchapi_emulator.settings.gzip_answers = True
    answer = httpx.post(
        hook.transport.url,
        json={"folderId": hook.config.folder_id, "url": "https://example.com/a.jpg"},
        headers={"Authorization": f"Api-Key {searchapi_emulator.connection_extras(credential='api_key')['api_key']}"},
    )
    assert answer.headers["content-encoding"] == "gzip" and answer.json()["images"]  # the knob works
    assert hook.search_by_image(image=image) == plain
    assert asyncio.run(hook.asearch_by_image(image=image)) == plain


def test_a_compression_bomb_is_refused_on_both_paths(make_hook, searchapi_emulator):
    searchapi_emulator.settings.update({"gzip_answers": True, "fault_rate": 1.0, "fault_kinds": ["giant"]})
    hook = make_hook("api_key")
    with pytest.raises(SearchApiResponseError, match=f"larger than {MAX_RESPONSE_BYTES:,} bytes"):
        hook.search_by_image(url="https://example.com/a.jpg")
    with pytest.raises(SearchApiResponseError, match=f"larger than {MAX_RESPONSE_BYTES:,} bytes once decompressed"):
        asyncio.run(hook.asearch_by_image(url="https://example.com/b.jpg"))


def test_decoding_takes_gzip_zlib_and_raw_deflate_and_refuses_the_rest():
    text = b'{"images": []}' * 100
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert _decoded(gzip.compress(text), "gzip", 200) == text
    assert _decoded(zlib.compress(text), "deflate", 200) == text
    assert _decoded(raw_deflate.compress(text) + raw_deflate.flush(), "deflate", 200) == text
    assert _decoded(text, None, 200) == _decoded(text, "identity", 200) == text
    with pytest.raises(SearchApiResponseError, match="encoding not asked for: 'br'"):
        _decoded(text, "br", 200)
    with pytest.raises(SearchApiResponseError, match="HTTP 200 does not decompress"):
        _decoded(b"not gzip at all", "gzip", 200)


async def test_the_hook_replaces_a_connection_the_server_closed_without_a_failed_attempt(make_hook):
    async def one_answer_then_close(reader, writer):
        await _read_request(reader)
        await _answer(writer, b'{"images": [{"url": "https://found/1.jpg"}], "page": "0", "id": "cbir-1"}')

    server = _Server(one_answer_then_close)
    async with server as url:
        hook = make_hook("api_key", endpoint=url.removesuffix("/v2/image/search_by_image"))
        for _ in range(3):
            result = await hook.asearch_by_image(image=make_jpeg(1))
            assert result.cbir_id == "cbir-1" and result.images[0].url == "https://found/1.jpg"
            await asyncio.sleep(0.2)  # the server's close arrives while the connection is idle
        await hook.aclose()
    assert server.connections == 3
    assert hook.transport.requests_sent == 3 and not hook.transport.failures


@pytest.fixture
def proxy_variables(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


async def test_proxy_credentials_are_sent_on_both_paths(make_hook, proxy_variables):
    async def proxy(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        _Server.current.heads.append(head)
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        await _answer(writer, b'{"images": [], "id": "cbir-2"}')

    server = _Server(proxy)
    async with server as url:
        port = url.split(":")[2].split("/")[0]
        proxy_variables.setenv("HTTP_PROXY", f"http://robot:s3cret@127.0.0.1:{port}")
        hook = make_hook("api_key", endpoint="http://searchapi.invalid")
        assert (await hook.asearch_by_image(url="https://example.com/a.jpg")).cbir_id == "cbir-2"
        assert (await asyncio.to_thread(hook.search_by_image, url="https://example.com/b.jpg")).cbir_id == "cbir-2"
        await hook.aclose()
    assert len(server.heads) == 2
    for head in server.heads:  # both in absolute form to the proxy, with its credentials
        assert head.startswith(b"POST http://searchapi.invalid/v2/image/search_by_image ")
        assert b"\r\nProxy-Authorization: Basic cm9ib3Q6czNjcmV0\r\n" in head  # robot:s3cret


async def test_an_error_answer_that_does_not_decompress_keeps_its_status_and_is_retried(make_hook):
    async def unavailable_then_found(reader, writer):
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Encoding: br\r\nContent-Length: 5\r\n\r\n\x0b\x02\x80xx"
        )
        await _read_request(reader)
        await _answer(writer, b'{"images": [], "id": "cbir-3"}')

    async with _Server(unavailable_then_found) as url:
        hook = make_hook("api_key", endpoint=url.removesuffix("/v2/image/search_by_image"))
        assert (await hook.asearch_by_image(url="https://example.com/a.jpg")).cbir_id == "cbir-3"
        await hook.aclose()
    assert dict(hook.transport.failures) == {503: 1}


def test_a_truncated_gzip_answer_is_refused():
    with pytest.raises(SearchApiResponseError, match="cut short"):
        _decoded(gzip.compress(b'{"images": []}' * 100)[:-20], "gzip", 200)


async def test_a_request_cancelled_midway_leaves_no_connection_in_a_bad_state(make_hook):
    async def stall_then_answer(reader, writer):
        await _read_request(reader)
        if _Server.current.connections == 1:
            await asyncio.sleep(10)  # the first request never gets its answer
        await _answer(writer, b'{"images": [], "id": "cbir-4"}')

    server = _Server(stall_then_answer)
    async with server as url:
        hook = make_hook(
            "api_key", endpoint=url.removesuffix("/v2/image/search_by_image"), hook_kwargs={"max_connections": 1}
        )
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(hook.asearch_by_image(url="https://example.com/a.jpg"), 0.3)
        assert (await hook.asearch_by_image(url="https://example.com/b.jpg")).cbir_id == "cbir-4"
        await hook.aclose()
    assert server.connections == 2


def test_the_async_path_runs_on_uvloop(make_hook, searchapi_emulator):
    """uvloop (which users' own async code and ASGI servers run on) has no Happy Eyeballs option and
    transports that are not ``asyncio.Transport`` subclasses; searches, an idle close and a read
    timeout work on it as on asyncio's loop."""
    uvloop = pytest.importorskip("uvloop")
    hook = make_hook("api_key")
    image = make_jpeg(3)
    expected = hook.search_by_image(image=image)

    async def searches() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        results = await asyncio.gather(*(hook.asearch_by_image(image=image) for _ in range(8)))
        assert results == [expected] * 8

        async def one_answer_then_close(reader, writer):
            await _read_request(reader)
            await _answer(writer, b'{"images": [], "id": "cbir-uv"}')

        server = _Server(one_answer_then_close)
        async with server as url:
            closing = make_hook(
                "api_key", conn_id="searchapi_uv", endpoint=url.removesuffix("/v2/image/search_by_image")
            )
            for _ in range(2):
                assert (await closing.asearch_by_image(image=image)).cbir_id == "cbir-uv"
                await asyncio.sleep(0.2)  # the server's close arrives while the connection is idle
            await closing.aclose()
        assert server.connections == 2 and not closing.transport.failures

        async def never_answer(reader, writer):
            await _read_request(reader)
            await reader.read()  # until the client gives up and closes

        silent = _Server(never_answer)
        async with silent as url, _pool() as pool:
            with pytest.raises(httpcore.ReadTimeout):
                await _post(pool, url, b"x", timeout=0.2)
        await asyncio.wait_for(silent.finished.wait(), 5)
        await hook.aclose()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(searches())
    finally:
        loop.close()
