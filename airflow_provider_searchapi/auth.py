"""Credentials as ``httpx.Auth`` flows: one class each serves sync and async clients alike.

* :class:`ApiKeyAuth` and :class:`StaticTokenAuth` set a fixed header.
* :class:`RefreshingTokenAuth` holds an IAM token minted by a fetcher (authorized key → JWT exchange,
  or the VM metadata service), refreshes it before it expires, shares one exchange between every thread
  and coroutine that uses it, and on a 401 forces one refresh and resends the request once.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from datetime import datetime

import httpx
import jwt
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from airflow_provider_searchapi.config import IAM_AUDIENCE, AuthorizedKey
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


def _transient(err: BaseException) -> bool:
    if isinstance(err, httpx.TransportError):
        return True
    return isinstance(err, SearchApiAuthError) and err.status is not None and err.status >= 500


class ServiceAccountKeyFetcher:
    """Exchanges a signed JWT for an IAM token (``POST {iam_endpoint}`` → ``iamToken``, ``expiresAt``).

    :param key: the service account's authorized key.
    :param iam_endpoint: URL of the token exchange.
    :param timeout: seconds per HTTP request.
    :param verify_tls: verify the server's certificate.
    """

    def __init__(self, key: AuthorizedKey, iam_endpoint: str, *, timeout: float, verify_tls: bool = True) -> None:
        self._key = key
        self._endpoint = iam_endpoint
        self._timeout = timeout
        self._verify = verify_tls

    @retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(4),
        wait=wait_random_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def __call__(self) -> IamToken:
        started = time.time()
        try:
            with httpx.Client(timeout=self._timeout, verify=self._verify) as client:
                response = client.post(
                    self._endpoint,
                    json={"jwt": sign_jwt(self._key, now=started)},
                    headers={"x-client-request-id": str(uuid.uuid4())},
                )
        except httpx.TransportError as err:
            if certificate_refused(err):
                raise SearchApiAuthError(
                    f"TLS certificate of the IAM endpoint {httpx.URL(self._endpoint).host} could not be verified"
                ) from None
            raise
        if response.status_code != 200:
            raise SearchApiAuthError(
                f"IAM refused the authorized key {self._key.id} of service account "
                f"{self._key.service_account_id}: HTTP {response.status_code} {_error_message(response)}",
                status=response.status_code,
            )
        try:
            body = response.json()
            value = body["iamToken"]
            expires_at = _parse_rfc3339(body["expiresAt"])
        except (ValueError, KeyError, TypeError):
            raise SearchApiAuthError("IAM answered 200 without a readable iamToken/expiresAt") from None
        return IamToken(value=value, expires_at=expires_at, obtained_at=started)


class MetadataTokenFetcher:
    """Reads the VM's service-account token from the metadata service (inside Yandex Cloud only).

    :param endpoint: URL of the metadata token.
    :param timeout: seconds per HTTP request.
    """

    def __init__(self, endpoint: str, *, timeout: float) -> None:
        self._endpoint = endpoint
        self._timeout = min(timeout, 10.0)

    @retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(3),
        wait=wait_random_exponential(multiplier=0.5, max=4),
        reraise=True,
    )
    def __call__(self) -> IamToken:
        started = time.time()
        try:
            with httpx.Client(timeout=self._timeout) as client:
                response = client.get(self._endpoint, headers={"Metadata-Flavor": "Google"})
        except httpx.ConnectError:
            raise SearchApiAuthError(
                f"no credential in the connection and no VM metadata service at {self._endpoint}: "
                "set service_account_json, service_account_json_path, api_key or iam_token"
            ) from None
        if response.status_code != 200:
            raise SearchApiAuthError(
                f"VM metadata service answered HTTP {response.status_code}", status=response.status_code
            )
        try:
            body = response.json()
            return IamToken(
                value=body["access_token"],
                expires_at=started + float(body["expires_in"]),
                obtained_at=started,
            )
        except (ValueError, KeyError, TypeError):
            raise SearchApiAuthError("VM metadata service answered without access_token/expires_in") from None


def _parse_rfc3339(text: str) -> float:
    # Python < 3.11 does not take 'Z' nor nanoseconds; keep at most microseconds.
    text = text.strip().replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text).timestamp()


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:500]
    return str(body)[:200]
