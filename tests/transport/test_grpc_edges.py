"""The corners of the REST/gRPC parity: error codes, counters, credentials, threads, TLS, metadata.

The first half runs each test over both transports against the emulator; the second half drives
:class:`GrpcTransport` against small purpose-built gRPC servers on 127.0.0.1 (answers with chosen
status, metadata and trailers; TLS with certificates no system CA trusts).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

grpc = pytest.importorskip(
    "grpc", reason="LOUD SKIP: grpcio is not installed (pip install 'airflow-provider-searchapi[grpc]')"
)

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from airflow_provider_searchapi.auth import ApiKeyAuth  # noqa: E402
from airflow_provider_searchapi.exceptions import SearchApiHTTPError, is_setup_failure  # noqa: E402
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook  # noqa: E402
from airflow_provider_searchapi.models import SearchRequest  # noqa: E402
from airflow_provider_searchapi.ratelimit import RateLimiter  # noqa: E402
from airflow_provider_searchapi.retry import Caller, CallStats, RetryPolicy  # noqa: E402
from airflow_provider_searchapi.transport.grpc import GrpcTransport  # noqa: E402
from airflow_provider_searchapi.transport.grpc_messages import (  # noqa: E402
    METHOD,
    ImageSearchByImageRequest,
    ImageSearchByImageResponse,
)
from tests.conftest import make_jpeg  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(max_attempts=5, backoff_base=0.01, backoff_max=0.05)
SECRET_KEY = "AQVNwrong-but-secret-0123456789"


# -- both transports, against the emulator -------------------------------------------------------
@pytest.fixture(params=["rest", "grpc"])
def hook_on(request, searchapi_emulator, monkeypatch) -> Iterator[Callable[..., SearchApiHook]]:
    """Build a hook on the emulator over the transport of the parameter."""
    hooks: list[SearchApiHook] = []

    def build(credential: str = "api_key", **overrides: Any) -> SearchApiHook:
        extras = searchapi_emulator.connection_extras(credential=credential, transport=request.param)
        conn = json.dumps({"conn_type": "yandex_searchapi", "extra": {**extras, **overrides}})
        monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_EDGES", conn)
        hook = SearchApiHook("searchapi_edges", retry_policy=FAST)
        hooks.append(hook)
        return hook

    yield build
    for hook in hooks:
        hook.close()


@pytest.mark.parametrize(
    "overrides, call, status, grpc_code",
    [
        ({"folder_id": "b1gnotyours"}, {"url": "https://x/1.jpg"}, 403, 7),
        ({}, {"image": make_jpeg(1)[:-20]}, 400, 3),  # a JPEG the emulator cannot decode
        ({}, {"cbir_id": "1/unknown"}, 404, 5),
    ],
)
def test_final_errors_carry_the_same_status_and_grpc_code(hook_on, overrides, call, status, grpc_code):
    hook = hook_on(**overrides)
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(**call)
    err = info.value
    assert (err.status, err.grpc_code, err.retryable) == (status, grpc_code, False)
    assert err.request_id and err.request_id in str(err)
    assert hook.stats.attempts == 1 and hook.stats.failures == {status: 1}


@pytest.mark.parametrize("kind, status", [("429", 429), ("500", 500), ("503", 503), ("504", 504)])
def test_retried_failures_are_counted_alike(hook_on, searchapi_emulator, kind, status):
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": [kind], "fault_attempts": 2})
    hook = hook_on()
    assert hook.search_by_image(image=make_jpeg(4)).images
    assert hook.stats.attempts == 3 and hook.stats.failures == {status: 2}


def test_an_unreachable_endpoint_is_no_answer_over_both(hook_on, searchapi_emulator):
    """Status 0 ("no answer"), as REST says it: what the setup breaker and the hints take for a wrong
    endpoint (gRPC said 503, as if the service had answered)."""
    closed = "http://127.0.0.1:9"
    hook = hook_on(endpoint=closed, grpc_endpoint=closed)
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(url="https://x/1.jpg")
    assert (info.value.status, info.value.retryable) == (0, True) and is_setup_failure(info.value)
    assert hook.stats.failures == {0: FAST.max_attempts}


@pytest.mark.parametrize("use_async", [False, True])
async def test_no_answer_within_the_timeout_is_status_0_over_both(hook_on, searchapi_emulator, use_async):
    """A call that outlives the connection's timeout had no answer: status 0, as REST says it (gRPC
    said 504, as if the service had answered "deadline exceeded")."""
    searchapi_emulator.settings.update({"fault_rate": 1.0, "fault_kinds": ["stall"], "fault_attempts": 9})
    searchapi_emulator.settings.stall_seconds = 2.0
    hook = hook_on(timeout=0.3)
    with pytest.raises(SearchApiHTTPError) as info:
        if use_async:
            await hook.asearch_by_image(url="https://x/1.jpg")
        else:
            hook.search_by_image(url="https://x/1.jpg")
    assert (info.value.status, info.value.retryable) == (0, True) and "no answer within 0.3 s" in str(info.value)
    assert hook.stats.failures == {0: FAST.max_attempts}


def test_an_endpoint_without_the_search_is_a_setup_failure_over_both(hook_on, searchapi_emulator):
    """A server that has no such method (a wrong endpoint) answers 404 over REST; over gRPC it says
    UNIMPLEMENTED, which must weigh the same: final, and the setup's fault, with its hint."""
    other = grpc.server(futures.ThreadPoolExecutor(1))  # a gRPC server of other services
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        hook = hook_on(endpoint=f"{searchapi_emulator.url}/elsewhere", grpc_endpoint=f"http://127.0.0.1:{port}")
        with pytest.raises(SearchApiHTTPError) as info:
            hook.search_by_image(url="https://x/1.jpg")
    finally:
        other.stop(grace=None)
    assert (info.value.status, info.value.retryable) == (404, False) and is_setup_failure(info.value)
    assert hook.stats.attempts == 1


def test_a_refused_api_key_is_final_and_never_shown(hook_on, searchapi_emulator):
    hook = hook_on(api_key=SECRET_KEY)
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=make_jpeg(2))
    assert (info.value.status, info.value.grpc_code) == (401, 16)
    assert SECRET_KEY not in str(info.value) and SECRET_KEY not in repr(info.value)
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 1


def test_a_token_refused_after_the_refresh_is_final(hook_on, searchapi_emulator, monkeypatch):
    hook = hook_on("authorized_key")
    monkeypatch.setattr(searchapi_emulator, "_authorized", lambda header: False)
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=make_jpeg(3))
    assert (info.value.status, info.value.grpc_code, info.value.retryable) == (401, 16, False)
    stats = searchapi_emulator.stats.snapshot()
    assert (stats["search_requests"], stats["token_exchanges"]) == (2, 2)  # one refresh, one resend


async def test_async_revoked_token_costs_one_refresh(hook_on, searchapi_emulator):
    hook = hook_on("authorized_key")
    await hook.aget_config()
    await hook.asearch_by_image(url="https://x/1.jpg")
    searchapi_emulator.revoke_tokens()
    assert (await hook.asearch_by_image(url="https://x/2.jpg")).cbir_id
    await hook.aclose()
    stats = searchapi_emulator.stats.snapshot()
    assert stats["token_exchanges"] == 2 and stats["responses"].get("401") == 1


def test_threads_share_the_rate_limit(hook_on, searchapi_emulator):
    hook = hook_on("authorized_key", requests_per_second=20)
    hook.search_by_image(url="https://x/0.jpg")  # makes the client or channel and the token once
    with futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: hook.search_by_image(url=f"https://x/{i}.jpg"), range(1, 20)))
    arrivals = sorted(searchapi_emulator.stats.arrivals)
    assert len(results) == 19 and len(arrivals) == 20
    assert arrivals[-1] - arrivals[0] >= 19 / 20 * 0.95
    assert searchapi_emulator.stats.snapshot()["token_exchanges"] == 1


# -- gRPC only, against purpose-built servers ---------------------------------------------------
Answer = tuple[Any, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


class ScriptedServer:
    """``SearchByImage`` on 127.0.0.1 that fails as scripted (code, details, initial metadata,
    trailers), then answers one image.

    :param answers: the failures to give, in order.
    :param credentials: ``grpc.ssl_server_credentials`` to serve TLS; plaintext without.
    """

    def __init__(self, answers: list[Answer] | None = None, credentials: Any = None) -> None:
        self.answers = list(answers or [])
        self.arrivals: list[float] = []
        self.metadata: list[dict[str, str]] = []
        handler = grpc.method_handlers_generic_handler(
            METHOD.split("/")[1],
            {
                "SearchByImage": grpc.unary_unary_rpc_method_handler(
                    self._handle,
                    request_deserializer=ImageSearchByImageRequest.FromString,
                    response_serializer=ImageSearchByImageResponse.SerializeToString,
                )
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(4), handlers=(handler,))
        if credentials is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self._server.start()

    def _handle(self, request: Any, context: Any) -> Any:
        self.arrivals.append(time.monotonic())
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        if self.answers:
            code, details, initial, trailers = self.answers.pop(0)
            if initial:
                context.send_initial_metadata(initial)
            if trailers:
                context.set_trailing_metadata(trailers)
            context.abort(code, details)
        response = ImageSearchByImageResponse(id="1/scripted")
        response.images.add(url="https://found/1.jpg", width=5)
        return response

    def stop(self) -> None:
        self._server.stop(grace=None)


def _transport(endpoint: str, policy: RetryPolicy = FAST, stats: CallStats | None = None) -> GrpcTransport:
    caller = Caller(RateLimiter(1000), policy, stats or CallStats())
    return GrpcTransport(endpoint=endpoint, auth=ApiKeyAuth("k"), caller=caller, timeout=5)


REQUEST = SearchRequest.build(folder_id="b1g", url="https://x/1.jpg")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retry_after_and_request_id_come_from_metadata(mode):
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    server = ScriptedServer(
        [
            (exhausted, "slow down", (("x-request-id", "req-initial"),), (("retry-after", "0.4"),)),
            (exhausted, "slow down", (), (("retry-after", "soon"), ("x-server-trace-id", "trace-7"))),
        ]
    )
    # 429s do not count against max_attempts: the time bound (0 s: no second attempt) stops them.
    transport = _transport(f"http://127.0.0.1:{server.port}", RetryPolicy(max_total_seconds=0))
    errors = []
    for _ in range(2):
        with pytest.raises(SearchApiHTTPError) as info:
            if mode == "sync":
                transport.search(REQUEST)
            else:
                asyncio.run(_asearch_once(transport))
        errors.append(info.value)
    server.stop()
    assert [(e.status, e.grpc_code, e.retryable) for e in errors] == [(429, 8, True)] * 2
    assert [(e.request_id, e.retry_after) for e in errors] == [("req-initial", 0.4), ("trace-7", None)]
    assert server.metadata[0]["authorization"] == "Api-Key k" and server.metadata[0]["x-client-request-id"]


async def _asearch_once(transport: GrpcTransport) -> None:
    try:
        await transport.asearch(REQUEST)
    finally:
        await transport.aclose()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_server_quoting_a_credential_of_no_known_shape_does_not_show_it(mode):
    key = "opaque-key-of-a-new-kind-0123456789"
    server = ScriptedServer([(grpc.StatusCode.UNAUTHENTICATED, f"unknown API key {key}", (), ())])
    caller = Caller(RateLimiter(1000), FAST, CallStats())
    transport = GrpcTransport(
        endpoint=f"http://127.0.0.1:{server.port}", auth=ApiKeyAuth(key), caller=caller, timeout=5
    )
    with pytest.raises(SearchApiHTTPError) as info:
        transport.search(REQUEST) if mode == "sync" else asyncio.run(_asearch_once(transport))
    server.stop()
    assert "unknown API key" in str(info.value) and "opaque-key" not in f"{info.value} {info.value!r}"


def test_retry_after_is_honoured_between_attempts():
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    server = ScriptedServer([(exhausted, "quota", (), (("retry-after", "0.4"),))])
    stats = CallStats()
    transport = _transport(f"http://127.0.0.1:{server.port}", RetryPolicy(backoff_base=0.01, backoff_max=1.0), stats)
    assert transport.search(REQUEST).cbir_id == "1/scripted"
    server.stop()
    assert server.arrivals[1] - server.arrivals[0] >= 0.38
    assert stats.attempts == 2 and stats.failures == {429: 1}


def _self_signed(san: x509.GeneralName) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "searchapi-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def test_an_untrusted_certificate_is_refused_at_once(tmp_path, monkeypatch):
    cert, key = _self_signed(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = ScriptedServer(credentials=grpc.ssl_server_credentials([(key, cert)]))
    extras = {"folder_id": "b1g", "api_key": "k", "transport": "grpc", "grpc_endpoint": f"127.0.0.1:{server.port}"}
    monkeypatch.setenv("AIRFLOW_CONN_SEARCHAPI_TLS", json.dumps({"conn_type": "yandex_searchapi", "extra": extras}))
    hook = SearchApiHook("searchapi_tls", retry_policy=FAST)
    try:
        with pytest.raises(SearchApiHTTPError) as info:
            hook.search_by_image(url="https://x/1.jpg")
        with pytest.raises(SearchApiHTTPError) as ainfo:
            asyncio.run(_asearch_and_close(hook))
    finally:
        hook.close()
        server.stop()
    for err in (info.value, ainfo.value):
        assert (err.status, err.grpc_code, err.retryable) == (0, 14, False)
        assert "certificate of 127.0.0.1 could not be verified" in err.message
    assert hook.stats.attempts == 2 and hook.stats.failures == {0: 2}
    assert server.arrivals == []


async def _asearch_and_close(hook: SearchApiHook) -> None:
    try:
        await hook.asearch_by_image(url="https://x/1.jpg")
    finally:
        await hook.aclose()


_TRUSTED_CLIENT = """
import json, sys
from airflow_provider_searchapi.auth import ApiKeyAuth
from airflow_provider_searchapi.exceptions import SearchApiHTTPError
from airflow_provider_searchapi.models import SearchRequest
from airflow_provider_searchapi.ratelimit import RateLimiter
from airflow_provider_searchapi.retry import Caller, CallStats, RetryPolicy  # noqa: E402
from airflow_provider_searchapi.transport.grpc import GrpcTransport
out = {}
for name, endpoint in json.loads(sys.argv[1]).items():
    stats = CallStats()
    caller = Caller(RateLimiter(1000), RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02), stats)
    t = GrpcTransport(endpoint=endpoint, auth=ApiKeyAuth("k"), caller=caller, timeout=5)
    try:
        out[name] = {"cbir_id": t.search(SearchRequest.build(folder_id="b1g", url="https://x/1.jpg")).cbir_id}
    except SearchApiHTTPError as err:
        out[name] = {"status": err.status, "retryable": err.retryable, "message": err.message}
    out[name]["sent"] = stats.attempts
    t.close()
print(json.dumps(out))
"""


def test_tls_with_a_trusted_certificate_and_a_wrong_host_name(tmp_path):
    good_cert, good_key = _self_signed(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    other_cert, other_key = _self_signed(x509.DNSName("elsewhere.invalid"))
    roots = tmp_path / "roots.pem"
    roots.write_bytes(good_cert + other_cert)
    good = ScriptedServer(credentials=grpc.ssl_server_credentials([(good_key, good_cert)]))
    other = ScriptedServer(credentials=grpc.ssl_server_credentials([(other_key, other_cert)]))
    endpoints = {"good": f"127.0.0.1:{good.port}", "wrong_name": f"https://127.0.0.1:{other.port}"}
    try:
        # gRPC reads its trusted roots once per process: the client runs in a fresh one.
        env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(roots), "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", _TRUSTED_CLIENT, json.dumps(endpoints)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        good.stop()
        other.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["good"] == {"cbir_id": "1/scripted", "sent": 1}
    assert out["wrong_name"]["status"] == 0 and out["wrong_name"]["retryable"] is False
    assert "could not be verified" in out["wrong_name"]["message"] and out["wrong_name"]["sent"] == 1
    assert good.metadata[0]["authorization"] == "Api-Key k" and other.arrivals == []
