"""Credentials as ``httpx.Auth`` flows: one class each serves sync and async clients alike.

* :class:`ApiKeyAuth` and :class:`StaticTokenAuth` set a fixed header.
* :class:`RefreshingTokenAuth` holds an IAM token minted by a fetcher (authorized key → JWT exchange,
  OAuth token exchange, or the VM metadata service), refreshes it before it expires, shares one exchange
  between every thread and coroutine that uses it, and on a 401 forces one refresh and resends once.

:func:`build_auth` picks the flow for a connection's config.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from airflow_provider_searchapi.config import IAM_AUDIENCE, AuthorizedKey, CredentialKind, SearchApiConfig
from airflow_provider_searchapi.exceptions import SearchApiAuthError, certificate_refused

#: Lifetime of the JWT we sign; IAM accepts at most one hour.
JWT_LIFETIME_SECONDS = 3600
#: IAM tokens live up to 12 hours; the docs recommend a new one about every hour.
DEFAULT_REFRESH_AFTER_SECONDS = 3600.0


@dataclass(frozen=True)
class IamToken:
    """An IAM token and when it stops working (seconds since the epoch)."""

    value: str
    expires_at: float
    obtained_at: float

    def __repr__(self) -> str:  # never show the token itself
        return f"IamToken(expires_at={self.expires_at}, obtained_at={self.obtained_at})"


class ApiKeyAuth(httpx.Auth):
    """``Authorization: Api-Key <key>`` on every request.

    :param api_key: a service-account API key.
    """

    def __init__(self, api_key: str) -> None:
        self.header = f"Api-Key {api_key}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header
        yield request


class StaticTokenAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` with a token given by the user (nothing to refresh).

    :param token: an IAM token.
    """

    def __init__(self, token: str) -> None:
        self.header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header
        yield request


class RefreshingTokenAuth(httpx.Auth):
    """A cached IAM token, refreshed before it expires and once after a 401.

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
        self.exchanges = 0

    def _usable(self, token: IamToken | None, now: float) -> bool:
        if token is None:
            return False
        lifetime = token.expires_at - token.obtained_at
        margin = min(300.0, 0.1 * lifetime)
        return now < token.obtained_at + self._refresh_after and now < token.expires_at - margin

    def get_token(self, *, stale: str | None = None) -> str:
        """Return a valid token, minting one if needed.

        :param stale: a token the server refused; if it is still the cached one, it is dropped first.
            Many requests refused with the same token thus cause a single refresh.
        """
        with self._lock:
            if stale is not None and self._token is not None and self._token.value == stale:
                self._token = None
            if not self._usable(self._token, time.time()):
                self._token = self._fetch()
                self.exchanges += 1
                if self._on_new_token is not None:
                    self._on_new_token(self._token.value)
            return self._token.value

    def cached_token(self) -> str | None:
        """The current token if it is still good, without minting one."""
        token = self._token
        return token.value if self._usable(token, time.time()) else None

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.get_token(stale=token)}"
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # The exchange is rare (hourly): run it in a thread under the same lock as sync callers, so
        # that threads and coroutines of the whole process share one token.
        token = self.cached_token() or await asyncio.to_thread(self.get_token)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = await asyncio.to_thread(self.get_token, stale=token)
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request


def authorization_header(auth: httpx.Auth, *, stale: str | None = None) -> str:
    """The ``Authorization`` value of a request sent with one of the credentials above, for transports
    that set the header themselves instead of running the ``httpx.Auth`` flow.

    :param auth: an :class:`ApiKeyAuth`, :class:`StaticTokenAuth` or :class:`RefreshingTokenAuth`.
    :param stale: a value the server refused with 401: a refreshing token is replaced (once for every
        request refused with the same one); fixed credentials are returned unchanged.
    """
    if isinstance(auth, RefreshingTokenAuth):
        return f"Bearer {auth.get_token(stale=stale.removeprefix('Bearer ') if stale else None)}"
    return str(auth.header)  # type: ignore[attr-defined]


async def aauthorization_header(auth: httpx.Auth, *, stale: str | None = None) -> str:
    """:func:`authorization_header` for async code: a token exchange (rare) runs in a thread."""
    if isinstance(auth, RefreshingTokenAuth):
        token = None if stale else auth.cached_token()
        if token is None:
            return await asyncio.to_thread(authorization_header, auth, stale=stale)
        return f"Bearer {token}"
    return authorization_header(auth)


def sign_jwt(key: AuthorizedKey, *, now: float | None = None) -> str:
    """A PS256-signed JWT asking IAM for a token of the key's service account."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": key.service_account_id,
        "aud": IAM_AUDIENCE,
        "iat": issued,
        "exp": issued + JWT_LIFETIME_SECONDS,
    }
    return jwt.encode(claims, key.load_private_key(), algorithm="PS256", headers={"kid": key.id})


class _IamAnswer(BaseModel):
    token: str = Field(alias="iamToken")
    expires_at: AwareDatetime = Field(alias="expiresAt")


class _IamExchange:
    """Posts a credential to IAM (``POST {iam_endpoint}``) for an IAM token and its ``expiresAt``.

    :param iam_endpoint: URL of the token exchange.
    :param timeout: seconds per HTTP request.
    :param verify_tls: verify the server's certificate.
    """

    def __init__(self, iam_endpoint: str, *, timeout: float, verify_tls: bool = True) -> None:
        self._endpoint = iam_endpoint
        self._timeout = timeout
        self._verify = verify_tls

    def _body(self, now: float) -> dict[str, Any]:
        raise NotImplementedError

    def _credential(self) -> str:
        """The credential as named in errors (never the secret itself)."""
        raise NotImplementedError

    def __call__(self) -> IamToken:
        started = time.time()
        request_id = str(uuid.uuid4())
        try:
            with httpx.Client(timeout=self._timeout, verify=self._verify) as client:
                headers = {"x-client-request-id": request_id}
                response = client.post(self._endpoint, json=self._body(started), headers=headers)
        except httpx.HTTPError as err:
            raise _unreachable(err, "the IAM endpoint", self._endpoint, request_id) from None
        if response.status_code != 200:
            raise SearchApiAuthError(
                response.status_code,
                f"IAM at {self._endpoint} refused {self._credential()}: {_error_message(response)}",
                request_id=request_id,
            )
        try:
            answer = _IamAnswer.model_validate_json(response.content)
        except ValidationError:
            raise SearchApiAuthError(
                200, f"IAM at {self._endpoint} answered without a readable iamToken/expiresAt", retryable=False
            ) from None
        return IamToken(value=answer.token, expires_at=answer.expires_at.timestamp(), obtained_at=started)


class ServiceAccountKeyFetcher(_IamExchange):
    """Exchanges a signed JWT for an IAM token.

    :param key: the service account's authorized key.
    :param iam_endpoint: URL of the token exchange.
    :param timeout: seconds per HTTP request.
    :param verify_tls: verify the server's certificate.
    """

    def __init__(self, key: AuthorizedKey, iam_endpoint: str, *, timeout: float, verify_tls: bool = True) -> None:
        super().__init__(iam_endpoint, timeout=timeout, verify_tls=verify_tls)
        self._key = key

    def _body(self, now: float) -> dict[str, Any]:
        return {"jwt": sign_jwt(self._key, now=now)}

    def _credential(self) -> str:
        return f"the authorized key {self._key.id} of service account {self._key.service_account_id}"


class OAuthTokenFetcher(_IamExchange):
    """Exchanges a user's OAuth token for an IAM token (``{"yandexPassportOauthToken": …}``).

    :param oauth_token: the user's OAuth token.
    :param iam_endpoint: URL of the token exchange.
    :param timeout: seconds per HTTP request.
    :param verify_tls: verify the server's certificate.
    """

    def __init__(self, oauth_token: str, iam_endpoint: str, *, timeout: float, verify_tls: bool = True) -> None:
        super().__init__(iam_endpoint, timeout=timeout, verify_tls=verify_tls)
        self._oauth_token = oauth_token

    def _body(self, now: float) -> dict[str, Any]:
        return {"yandexPassportOauthToken": self._oauth_token}

    def _credential(self) -> str:
        return "the OAuth token"


class MetadataTokenFetcher:
    """Reads the VM's service-account token from the metadata service (inside Yandex Cloud only).

    :param endpoint: URL of the metadata token.
    :param timeout: seconds per HTTP request.
    """

    def __init__(self, endpoint: str, *, timeout: float) -> None:
        self._endpoint = endpoint
        self._timeout = min(timeout, 10.0)

    def __call__(self) -> IamToken:
        started = time.time()
        try:
            with httpx.Client(timeout=self._timeout) as client:
                response = client.get(self._endpoint, headers={"Metadata-Flavor": "Google"})
        except httpx.ConnectError:
            raise SearchApiAuthError(
                0,
                f"no credential in the connection and no VM metadata service at {self._endpoint}: "
                "set service_account_json, service_account_json_path, api_key or iam_token",
                retryable=False,
            ) from None
        except httpx.HTTPError as err:
            raise _unreachable(err, "the VM metadata service", self._endpoint, None) from None
        if response.status_code != 200:
            raise SearchApiAuthError(
                response.status_code, f"the VM metadata service at {self._endpoint}: {_error_message(response)}"
            )
        try:
            body = response.json()
            return IamToken(
                value=body["access_token"],
                expires_at=started + float(body["expires_in"]),
                obtained_at=started,
            )
        except (ValueError, KeyError, TypeError):
            raise SearchApiAuthError(
                200, "the VM metadata service answered without access_token/expires_in", retryable=False
            ) from None


def _unreachable(err: httpx.HTTPError, what: str, endpoint: str, request_id: str | None) -> SearchApiAuthError:
    """No answer from a token service: a refused certificate (final), else retried like any no-answer."""
    if certificate_refused(err):
        return SearchApiAuthError(
            0, f"TLS certificate of {what} {endpoint} could not be verified", request_id=request_id, retryable=False
        )
    return SearchApiAuthError(0, f"could not reach {what} {endpoint} ({type(err).__name__})", request_id=request_id)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:500]
    return str(body)[:200]


def build_auth(config: SearchApiConfig) -> httpx.Auth:
    """The ``httpx.Auth`` for a config's credential; those that mint tokens are shared by the whole
    process (one per credential and endpoint), so that every hook uses one cached token."""
    if config.credential is CredentialKind.API_KEY:
        assert config.api_key is not None
        return ApiKeyAuth(config.api_key.get_secret_value())
    if config.credential is CredentialKind.IAM_TOKEN:
        assert config.iam_token is not None
        return StaticTokenAuth(config.iam_token.get_secret_value())
    fetch: Callable[[], IamToken]
    if config.credential is CredentialKind.AUTHORIZED_KEY:
        key = config.authorized_key
        assert key is not None
        cache_key = f"sa|{key.id}|{config.iam_endpoint}|{_fingerprint(key.private_key.get_secret_value())}"
        fetch = ServiceAccountKeyFetcher(key, config.iam_endpoint, timeout=config.timeout, verify_tls=config.verify_tls)
    elif config.credential is CredentialKind.OAUTH:
        assert config.oauth_token is not None
        oauth_token = config.oauth_token.get_secret_value()
        cache_key = f"oauth|{config.iam_endpoint}|{_fingerprint(oauth_token)}"
        fetch = OAuthTokenFetcher(
            oauth_token, config.iam_endpoint, timeout=config.timeout, verify_tls=config.verify_tls
        )
    else:
        cache_key = f"metadata|{config.metadata_endpoint}"
        fetch = MetadataTokenFetcher(config.metadata_endpoint, timeout=config.timeout)
    with _token_auths_lock:
        auth = _token_auths.get(cache_key)
        if auth is None:
            auth = _token_auths[cache_key] = RefreshingTokenAuth(fetch, on_new_token=mask_secret)
        return auth


_token_auths: dict[str, RefreshingTokenAuth] = {}
_token_auths_lock = threading.Lock()


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def mask_secret(value: str) -> None:
    """Register a secret with Airflow's masker, so that it never shows in task logs."""
    from airflow.providers.common.compat.sdk import mask_secret as register

    register(value)
