"""Auth flows: JWT, token cache and refresh, one exchange for many callers, 401 refresh-once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime, timezone

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from airflow_provider_searchapi import config
from airflow_provider_searchapi.auth import (
    JWT_LIFETIME_SECONDS,
    IamToken,
    RefreshingTokenAuth,
    fetch_iam_token,
    sign_jwt,
)
from airflow_provider_searchapi.config import IAM_AUDIENCE, AuthorizedKey
from airflow_provider_searchapi.exceptions import SearchApiAuthError, SearchApiConfigError, SearchApiHTTPError
from airflow_provider_searchapi.testing.keys import generate_authorized_key
from tests.conftest import make_jpeg


def test_jwt_is_ps256_with_kid_and_verifies_with_the_public_key():
    key_dict = generate_authorized_key()
    key = AuthorizedKey.from_json(json.dumps(key_dict))
    now = time.time()
    token = sign_jwt(key, now=now)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "PS256", "kid": key_dict["id"], "typ": "JWT"}
    public = serialization.load_pem_public_key(key_dict["public_key"].encode())
    claims = jwt.decode(token, public, algorithms=["PS256"], audience=IAM_AUDIENCE)
    assert claims["iss"] == key_dict["service_account_id"]
    assert claims["iat"] == int(now)
    assert 0 < claims["exp"] - claims["iat"] <= 3600 == JWT_LIFETIME_SECONDS


def test_jwt_does_not_verify_with_another_key():
    key = AuthorizedKey.from_json(json.dumps(generate_authorized_key()))
    other = serialization.load_pem_public_key(generate_authorized_key()["public_key"].encode())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(sign_jwt(key), other, algorithms=["PS256"], audience=IAM_AUDIENCE)


def test_a_private_key_is_loaded_once_per_process_whatever_the_hooks_and_signatures(
    make_hook, searchapi_emulator, jpeg, monkeypatch
):
    # Loading tests the key's primes: 50 ms of CPU for 2,048 bits, paid by every hook parsing its
    # connection and by every exchange before keys were kept.
    loads = []
    real_load = serialization.load_pem_private_key

    def counting_load(*args, **kwargs):
        loads.append(1)  # counted only: a failing assert would print what the list holds
        return real_load(*args, **kwargs)

    monkeypatch.setattr(serialization, "load_pem_private_key", counting_load)
    config._load_pem_private_key.cache_clear()
    key = generate_authorized_key()
    searchapi_emulator.add_authorized_key(key)
    for _ in range(3):  # as three tasks in one process (or one task's three hooks) would
        hook = make_hook("authorized_key", requests_per_second=1000, service_account_json=json.dumps(key))
        assert hook.search_by_image(image=jpeg).cbir_id
    assert searchapi_emulator.stats.snapshot()["token_exchanges"] == 1
    assert len(loads) == 1

    # Each PEM is its own entry: a JWT is signed by its own key, and a bad key fails every time.
    first, second = generate_authorized_key(), generate_authorized_key()
    for key_dict in (first, second, first, second):
        token = sign_jwt(AuthorizedKey.from_json(json.dumps(key_dict)))
        public = serialization.load_pem_public_key(key_dict["public_key"].encode())
        assert (
            jwt.decode(token, public, algorithms=["PS256"], audience=IAM_AUDIENCE)["iss"]
            == key_dict["service_account_id"]
        )
    assert len(loads) == 3
    lines = first["private_key"].splitlines()
    broken = {**first, "private_key": "\n".join(lines[:5] + lines[6:])}  # a line of the key left out
    for _ in range(2):
        with pytest.raises(SearchApiConfigError, match="service_account_json.private_key.*could not be loaded"):
            AuthorizedKey.from_json(json.dumps(broken))
    assert len(loads) == 5  # tried each time, its failure not remembered


class _CountingFetcher:
    def __init__(self, lifetime: float = 3600.0, delay: float = 0.0) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.delay = delay

    def __call__(self) -> IamToken:
        self.calls += 1
        time.sleep(self.delay)
        now = time.time()
        return IamToken(value=f"token-{self.calls}", expires_at=now + self.lifetime, obtained_at=now)


def test_token_is_cached_until_refresh_time():
    fetch = _CountingFetcher(lifetime=12 * 3600)
    auth = RefreshingTokenAuth(fetch, refresh_after=0.3)
    assert auth.get_token() == auth.get_token() == "token-1"
    time.sleep(0.35)
    assert auth.get_token() == "token-2"


def test_token_is_refreshed_before_it_expires():
    fetch = _CountingFetcher(lifetime=1.0)  # refreshed 10 % (0.1 s) before expiry
    auth = RefreshingTokenAuth(fetch, refresh_after=3600)
    auth.get_token()
    time.sleep(0.95)
    assert auth.get_token() == "token-2"


def test_stale_token_is_dropped_once_for_many_refusals():
    fetch = _CountingFetcher()
    auth = RefreshingTokenAuth(fetch)
    refused = auth.get_token()
    results = [auth.get_token(stale=refused) for _ in range(10)]
    assert fetch.calls == 2 and set(results) == {"token-2"}


def test_every_new_token_is_reported_for_masking():
    seen = []
    auth = RefreshingTokenAuth(_CountingFetcher(), on_new_token=seen.append)
    auth.get_token(stale=auth.get_token())
    assert seen == ["token-1", "token-2"]


def test_one_exchange_for_many_threads_and_coroutines(make_hook, searchapi_emulator):
    hook = make_hook("authorized_key", requests_per_second=1000)
    images = [make_jpeg(seed) for seed in range(32)]
    errors = []

    def work(image):
        try:
            hook.search_by_image(image=image)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(image,)) for image in images[:16]]
    for thread in threads:
        thread.start()

    async def many():
        await asyncio.gather(*(hook.asearch_by_image(image=image) for image in images[16:]))
        await hook.aclose()

    asyncio.run(many())
    for thread in threads:
        thread.join()
    assert not errors
    stats = searchapi_emulator.stats.snapshot()
    assert stats["token_exchanges"] == 1
    assert stats["responses"] == {"200": 32}


def test_a_401_refreshes_once_and_the_call_succeeds(make_hook, searchapi_emulator, jpeg):
    hook = make_hook("authorized_key")
    hook.search_by_image(image=jpeg)
    searchapi_emulator.revoke_tokens()
    result = hook.search_by_image(image=jpeg)
    assert result.images
    stats = searchapi_emulator.stats.snapshot()
    assert stats["token_exchanges"] == 2
    assert stats["responses"] == {"200": 2, "401": 1}


async def test_many_concurrent_401s_cause_one_refresh(make_hook, searchapi_emulator):
    hook = make_hook("authorized_key", requests_per_second=1000)
    await hook.asearch_by_image(image=make_jpeg(0))
    searchapi_emulator.revoke_tokens()
    results = await asyncio.gather(*(hook.asearch_by_image(image=make_jpeg(s)) for s in range(1, 21)))
    await hook.aclose()
    assert all(r.images for r in results)
    assert searchapi_emulator.stats.snapshot()["token_exchanges"] == 2


def test_a_static_token_that_expired_fails_with_401_not_retried(make_hook, searchapi_emulator, jpeg):
    hook = make_hook("iam_token")
    searchapi_emulator.revoke_tokens()
    with pytest.raises(SearchApiHTTPError) as info:
        hook.search_by_image(image=jpeg)
    assert info.value.status == 401
    assert searchapi_emulator.stats.snapshot()["search_requests"] == 1


def test_minted_tokens_are_registered_with_the_masker(make_hook, searchapi_emulator, jpeg):
    from airflow.sdk.log import _secrets_masker

    hook = make_hook("authorized_key")
    hook.search_by_image(image=jpeg)
    token = hook.auth.get_token()
    masker = _secrets_masker()
    assert token not in masker.redact(f"token is {token}")
    pem = hook.config.authorized_key.private_key.get_secret_value()
    assert "PRIVATE KEY" not in masker.redact(f"key: {pem}")


@pytest.fixture
def iam_answering():
    """A server on 127.0.0.1 whose IAM exchange answers with the status and body the test sets (a
    body may be a function of the request's body)."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from airflow_provider_searchapi.testing.server import ServerThread

    answer = {"body": b"{}", "status": 200}

    async def tokens(request):
        body = answer["body"](await request.body()) if callable(answer["body"]) else answer["body"]
        return Response(body, status_code=answer["status"], media_type="application/json")

    server = ServerThread(
        Starlette(routes=[Route("/iam/v1/tokens", tokens, methods=["POST"])]), "127.0.0.1", 0, "critical", None, None
    )
    yield lambda body, status=200: answer.update(body=body, status=status) or f"{server.url}/iam/v1/tokens"
    server.stop()


@pytest.mark.parametrize(
    "expires_at",
    ["2030-01-02T03:04:05.123456789Z", "2030-01-02T03:04:05.123456Z", "2030-01-02T06:04:05.123456+03:00"],
)
def test_expires_at_is_read_to_the_microsecond_whatever_its_form(iam_answering, expires_at):
    url = iam_answering(json.dumps({"iamToken": "t1.minted", "expiresAt": expires_at}).encode())
    token = fetch_iam_token(SecretStr("y0_user"), url, timeout=5)
    assert token.value == "t1.minted"
    assert token.expires_at == datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    "body", [b'{"iamToken": "t1.x"}', b'{"iamToken": "t1.x", "expiresAt": "soon"}', b"<html>", b'{"expiresAt": 5}']
)
def test_an_unreadable_iam_answer_is_an_auth_error(iam_answering, body):
    with pytest.raises(SearchApiAuthError, match="without a readable iamToken/expiresAt"):
        fetch_iam_token(SecretStr("y0_user"), iam_answering(body), timeout=5)


@pytest.mark.parametrize("shape", ["message", "text"])
@pytest.mark.parametrize("credential", ["authorized_key", "oauth"])
def test_an_iam_refusal_quoting_the_request_does_not_show_the_credential(iam_answering, shape, credential):
    """The JWT (a bearer credential for the exchange) or the OAuth token, quoted back by IAM or a proxy."""
    sent = []

    def quoting(request: bytes) -> bytes:
        sent.append(json.loads(request).popitem()[1])
        quoted = f"cannot read the request {request.decode()}"
        return json.dumps({"code": 3, "message": quoted}).encode() if shape == "message" else quoted.encode()

    # An OAuth token of the older kind: nothing in its shape says it is one.
    given = (
        AuthorizedKey.from_json(generate_authorized_key())
        if credential == "authorized_key"
        else SecretStr("AQAAAAAold" * 4)
    )
    with pytest.raises(SearchApiAuthError) as info:
        fetch_iam_token(given, iam_answering(quoting, status=400), timeout=5)
    secret = sent[0].rsplit(".", 1)[-1][:24]  # the JWT's signature (its claims are no secret), or the token
    assert "cannot read the request" in str(info.value) and secret not in f"{info.value} {info.value!r}"


def test_the_emulator_exchanges_only_oauth_tokens_it_knows(searchapi_emulator):
    url = f"{searchapi_emulator.url}/iam/v1/tokens"
    searchapi_emulator.add_oauth_token("y0_known")
    known = httpx.post(url, json={"yandexPassportOauthToken": "y0_known"})
    assert known.status_code == 200 and known.json()["iamToken"].startswith("t1.")
    unknown = httpx.post(url, json={"yandexPassportOauthToken": "y0_other"})
    assert unknown.status_code == 401 and "OAuth" in unknown.json()["message"]
    assert httpx.post(url, json={"something": "else"}).status_code == 400
    assert searchapi_emulator.stats.snapshot()["token_exchanges"] == 1


def test_the_refresh_after_a_401_is_not_counted_against_max_attempts(make_hook, searchapi_emulator, jpeg):
    from airflow_provider_searchapi.retry import RetryPolicy

    hook = make_hook("authorized_key", retry_policy=RetryPolicy(max_attempts=1))
    hook.search_by_image(image=jpeg)
    searchapi_emulator.revoke_tokens()
    assert hook.search_by_image(image=jpeg).images  # a single attempt for faults, yet the token is refreshed
    assert searchapi_emulator.stats.snapshot()["responses"] == {"200": 2, "401": 1}
