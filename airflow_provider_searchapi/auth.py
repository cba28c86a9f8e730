"""Credentials as ``httpx.Auth`` flows (sync and async), picked for a connection by :func:`build_auth`.

IAM tokens are refreshed before they expire, one exchange per process. No flow resends after a 401: the
transports' caller does, after a refresh, so that the resend waits for a rate-limit slot like any request.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field

import httpx
import jwt
from pydantic import AwareDatetime, BaseModel, Field, SecretStr, ValidationError

from airflow_provider_searchapi.config import IAM_AUDIENCE, AuthorizedKey, SearchApiConfig
from airflow_provider_searchapi.exceptions import SearchApiAuthError, certificate_refused

#: Lifetime of the JWT we sign; IAM accepts at most one hour.
JWT_LIFETIME_SECONDS = 3600
#: IAM tokens live up to 12 hours; the docs recommend a new one about every hour.
DEFAULT_REFRESH_AFTER_SECONDS = 3600.0


@dataclass(frozen=True)
class IamToken:
    """An IAM token and when it was obtained and stops working (seconds since the epoch)."""

    value: str = field(repr=False)
    expires_at: float
    obtained_at: float


class StaticTokenAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` with a token given by the user (nothing to refresh).

    :param token: an IAM token.
    """

    scheme = "Bearer"

    def __init__(self, token: str) -> None:
        self.header = f"{self.scheme} {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header
        yield request


class ApiKeyAuth(StaticTokenAuth):
    """``Authorization: Api-Key <key>`` on every request.

    :param token: a service-account API key.
    """

    scheme = "Api-Key"


class RefreshingTokenAuth(httpx.Auth):
    """A cached IAM token, refreshed before it expires, or when a caller says the server refused it.

    :param fetch: mints a new token; called under a lock, so at most one exchange runs at a time.
    :param refresh_after: seconds after which a token is replaced even if it lives longer.
    :param on_new_token: called with every new token value (to register it with a secrets masker).
    """

    def __init__(
        self,
        fetch: Callable[[], IamToken],
        *,
        refresh_after: float = DEFAULT_REFRESH_AFTER_SECONDS,
        on_new_token: Callable[[str], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._refresh_after = refresh_after
        self._on_new_token = on_new_token
        self._lock = threading.Lock()
        self._token: IamToken | None = None

    def _usable(self, token: IamToken | None, now: float) -> bool:
        if token is None:
            return False
        margin = min(300.0, 0.1 * (token.expires_at - token.obtained_at))
        return now < token.obtained_at + self._refresh_after and now < token.expires_at - margin

    def get_token(self, *, stale: str | None = None) -> str:
        """Return a valid token, minting one if needed.

        :param stale: a token the server refused; if it is still the cached one, it is dropped first,
            so that many requests refused with the same token cause a single refresh.
        """
        with self._lock:
            if stale is not None and self._token is not None and self._token.value == stale:
                self._token = None
            if not self._usable(self._token, time.time()):
                self._token = self._fetch()
                if self._on_new_token is not None:
                    self._on_new_token(self._token.value)
            return self._token.value

    def cached_token(self) -> str | None:
        """The current token if it is still good, without minting one."""
        token = self._token
        return token.value if self._usable(token, time.time()) else None

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.get_token()}"
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # An exchange runs in a thread, under the lock sync callers use: the process shares one token.
        request.headers["Authorization"] = await aauthorization_header(self)
        yield request


def authorization_header(auth: httpx.Auth, *, stale: str | None = None) -> str:
    """The ``Authorization`` value of a request (the transports set the header themselves).

    :param auth: an :class:`ApiKeyAuth`, :class:`StaticTokenAuth` or :class:`RefreshingTokenAuth`.
    :param stale: a value the server refused with 401: a refreshing token is replaced (once for every
        request refused with the same one); fixed credentials are returned unchanged.
    """
    if isinstance(auth, RefreshingTokenAuth):
        return f"Bearer {auth.get_token(stale=stale.removeprefix('Bearer ') if stale else None)}"
    return str(auth.header)  # type: ignore[attr-defined]


async def aauthorization_header(auth: httpx.Auth, *, stale: str | None = None) -> str:
    """:func:`authorization_header` for async code: a token exchange runs in a thread."""
    if not isinstance(auth, RefreshingTokenAuth):
        return authorization_header(auth)
    cached = f"Bearer {token}" if (token := auth.cached_token()) else None
    return cached if cached and cached != stale else await asyncio.to_thread(authorization_header, auth, stale=stale)


def sign_jwt(key: AuthorizedKey, *, now: float | None = None) -> str:
    """A PS256-signed JWT asking IAM for a token of the key's service account.

    :param key: the service account's authorized key.
    :param now: the issue time (seconds since the epoch; default: now).
    """
    issued = int(now if now is not None else time.time())
    claims = {"iss": key.service_account_id, "aud": IAM_AUDIENCE, "iat": issued, "exp": issued + JWT_LIFETIME_SECONDS}
    return jwt.encode(claims, key.load_private_key(), algorithm="PS256", headers={"kid": key.id})


class _IamAnswer(BaseModel):
    token: str = Field(alias="iamToken")
    expires_at: AwareDatetime = Field(alias="expiresAt")


def fetch_iam_token(
    credential: AuthorizedKey | SecretStr, iam_endpoint: str, *, timeout: float, verify_tls: bool = True
) -> IamToken:
    """Exchange a credential for an IAM token at ``POST {iam_endpoint}``: a JWT signed with a service
    account's authorized key, or a user's OAuth token.

    :param credential: the authorized key, or the OAuth token.
    :param iam_endpoint: URL of the token exchange.
    :param timeout: seconds per HTTP request.
    :param verify_tls: verify the server's certificate.
    """
    started = time.time()
    request_id = str(uuid.uuid4())
    if isinstance(credential, AuthorizedKey):
        field, secret = "jwt", sign_jwt(credential, now=started)
        named = f"the authorized key {credential.id} of service account {credential.service_account_id}"
    else:
        field, secret, named = "yandexPassportOauthToken", credential.get_secret_value(), "the OAuth token"
    try:
        with httpx.Client(timeout=timeout, verify=verify_tls) as client:
            response = client.post(iam_endpoint, json={field: secret}, headers={"x-client-request-id": request_id})
    except httpx.HTTPError as err:
        raise _unreachable(err, "the IAM endpoint", iam_endpoint, request_id) from None
    if response.status_code != 200:
        message = f"IAM at {iam_endpoint} refused {named}: {_error_message(response, without=secret)}"
        raise SearchApiAuthError(response.status_code, message, request_id=request_id)
    try:
        answer = _IamAnswer.model_validate_json(response.content)
    except ValidationError:
        raise SearchApiAuthError(
            200, f"IAM at {iam_endpoint} answered without a readable iamToken/expiresAt", retryable=False
        ) from None
    return IamToken(answer.token, expires_at=answer.expires_at.timestamp(), obtained_at=started)


class _MetadataAnswer(BaseModel):
    access_token: str
    expires_in: float


def fetch_metadata_token(endpoint: str, *, timeout: float) -> IamToken:
    """Read the VM's service-account token from the metadata service (inside Yandex Cloud only).

    :param endpoint: URL of the metadata token.
    :param timeout: seconds per HTTP request (at most 10 are waited).
    """
    started = time.time()
    try:
        with httpx.Client(timeout=min(timeout, 10.0)) as client:
            response = client.get(endpoint, headers={"Metadata-Flavor": "Google"})
    except httpx.ConnectError:
        raise SearchApiAuthError(
            0,
            f"no credential in the connection and no VM metadata service at {endpoint}: "
            "set service_account_json, service_account_json_path, api_key or iam_token",
            retryable=False,
        ) from None
    except httpx.HTTPError as err:
        raise _unreachable(err, "the VM metadata service", endpoint, None) from None
    if response.status_code != 200:
        message = f"the VM metadata service at {endpoint}: {_error_message(response)}"
        raise SearchApiAuthError(response.status_code, message)
    try:
        answer = _MetadataAnswer.model_validate_json(response.content)
    except ValidationError:
        raise SearchApiAuthError(
            200, "the VM metadata service answered without access_token/expires_in", retryable=False
        ) from None
    return IamToken(answer.access_token, expires_at=started + answer.expires_in, obtained_at=started)


def _unreachable(err: httpx.HTTPError, what: str, endpoint: str, request_id: str | None) -> SearchApiAuthError:
    """No answer from a token service: a refused certificate (final), else retried like any no-answer."""
    if certificate_refused(err):
        return SearchApiAuthError(
            0, f"TLS certificate of {what} {endpoint} could not be verified", request_id=request_id, retryable=False
        )
    return SearchApiAuthError(0, f"could not reach {what} {endpoint} ({type(err).__name__})", request_id=request_id)


def _error_message(response: httpx.Response, *, without: str | None = None) -> str:
    """The error an answer carries, the secret sent (``without``) cut out: a server may quote the request."""
    text = response.text.replace(without, "[redacted]") if without else response.text
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:500]
    return str(body)[:200]


_token_auths: dict[tuple[str, ...], RefreshingTokenAuth] = {}
_token_auths_lock = threading.Lock()


def build_auth(config: SearchApiConfig) -> httpx.Auth:
    """The ``httpx.Auth`` for a config's credential. Those minting tokens are shared by the whole
    process (one per credential and endpoint), so that every hook uses one cached token.

    :param config: the connection's settings.
    """
    if config.api_key is not None:
        return ApiKeyAuth(config.api_key.get_secret_value())
    if config.iam_token is not None:
        return StaticTokenAuth(config.iam_token.get_secret_value())
    fetch: Callable[[], IamToken]
    credential = config.authorized_key or config.oauth_token  # kept secret: a partial's repr shows its arguments
    if credential:
        endpoint = config.iam_endpoint
        fetch = functools.partial(
            fetch_iam_token, credential, endpoint, timeout=config.timeout, verify_tls=config.verify_tls
        )
    else:
        endpoint = config.metadata_endpoint
        fetch = functools.partial(fetch_metadata_token, endpoint, timeout=config.timeout)
    fingerprint = hashlib.sha256("\n".join(config.secret_values()).encode()).hexdigest()
    key = (config.credential.value, endpoint, fingerprint)
    with _token_auths_lock:
        return _token_auths.setdefault(key, RefreshingTokenAuth(fetch, on_new_token=mask_secret))


def mask_secret(value: str) -> None:
    """Register a secret with Airflow's masker, so that it never shows in task logs.

    :param value: the secret.
    """
    from airflow.providers.common.compat.sdk import mask_secret as register

    register(value)
