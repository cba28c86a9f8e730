"""``SearchApiHook``: Yandex Cloud Search API v2 *search by image* from any Airflow task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from functools import cached_property
from typing import Any

import httpx
import pydantic
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_searchapi import connection_fields
from airflow_provider_searchapi.auth import RefreshingTokenAuth, build_auth, mask_secret
from airflow_provider_searchapi.config import SearchApiConfig
from airflow_provider_searchapi.exceptions import SearchApiError, SearchApiHTTPError, status_hint
from airflow_provider_searchapi.images import check_image
from airflow_provider_searchapi.models import FamilyMode, ImageSearchResult, SearchRequest
from airflow_provider_searchapi.ratelimit import Limiter, shared_rate_limiter
from airflow_provider_searchapi.retry import INTERACTIVE_RETRY_POLICY, Caller, CallStats, RetryPolicy
from airflow_provider_searchapi.transport import SearchTransport
from airflow_provider_searchapi.transport.rest import RestTransport


class SearchApiHook(BaseHook):
    """Calls Yandex Cloud Search API v2 *search by image* with a ``yandex_searchapi`` connection (or the
    ``yandexcloud`` connection of Yandex's managed Airflow).

    Nothing touches the network until the first call. Calls are retried when that is safe and held to
    the connection's ``requests_per_second`` across every hook of the folder in the process (or,
    with a Redis ``rate_limit_conn_id``, across every process using the folder).

    :param searchapi_conn_id: the ``yandex_searchapi`` or ``yandexcloud`` connection to use.
    :param folder_id: the folder billed for searches, when the connection names none.
    :param requests_per_second: override of the connection's rate cap.
    :param rate_limit_conn_id: override of the connection's ``rate_limit_conn_id``: an Airflow ``redis``
        connection where every process using the folder shares one limit (``""``: none).
    :param retry_policy: override of the default retry policy (and of the shorter one of
        :meth:`test_connection`).
    :param max_connections: HTTP connection pool size (raise it with high concurrency).
    """

    conn_name_attr = "searchapi_conn_id"
    default_conn_name = "searchapi_default"
    conn_type = "yandex_searchapi"
    hook_name = "Yandex Cloud Search API"

    def __init__(
        self,
        searchapi_conn_id: str = default_conn_name,
        *,
        folder_id: str | None = None,
        requests_per_second: float | None = None,
        rate_limit_conn_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        max_connections: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.searchapi_conn_id = searchapi_conn_id
        self._folder_id = folder_id or None
        self._requests_per_second = requests_per_second
        self._rate_limit_conn_id = rate_limit_conn_id
        self._retry_policy = retry_policy
        self._max_connections = max_connections
        #: counters of this hook's calls: attempts sent, failures by status, 429s
        self.stats = CallStats()

    # The connection form on Airflow 3.0/3.1 (3.2+ reads it from the provider info).
    get_connection_form_widgets = staticmethod(connection_fields.connection_form_widgets)
    get_ui_field_behaviour = staticmethod(connection_fields.ui_field_behaviour)

    @cached_property
    def config(self) -> SearchApiConfig:
        """The validated connection settings (read once, on first use)."""
        conn = self.get_connection(self.searchapi_conn_id)
        config = self._load_config(conn.conn_type, conn.extra_dejson)
        _mask_credentials(config)
        return config

    async def aget_config(self) -> SearchApiConfig:
        """The validated connection settings, read without blocking the event loop."""
        if "config" not in self.__dict__:
            conn = await get_async_connection(self.searchapi_conn_id, hook=self)
            config = self._load_config(conn.conn_type, conn.extra_dejson)
            await asyncio.to_thread(_mask_credentials, config)  # talks to the task supervisor
            self.__dict__["config"] = config
        if "limiter" not in self.__dict__:  # may read a Redis connection
            await asyncio.to_thread(lambda: self.limiter)
        return self.config

    def _load_config(self, conn_type: str, extras: dict[str, Any]) -> SearchApiConfig:
        config = SearchApiConfig.from_connection(conn_type, extras, folder_id=self._folder_id)
        if self._folder_id and self._folder_id != config.folder_id:
            self.log.warning(
                "folder_id=%r is ignored: connection %s bills folder %s (a connection's folder wins)",
                self._folder_id,
                self.searchapi_conn_id,
                config.folder_id,
            )
        if not config.verify_tls:
            self.log.warning(
                "Connection %s has verify_tls=false: TLS certificates are NOT checked; use it only with a "
                "local emulator or a proxy you trust",
                self.searchapi_conn_id,
            )
        for name, url in (("endpoint", config.endpoint), ("iam_endpoint", config.iam_endpoint)):
            host = httpx.URL(url).host
            if url.startswith("http://") and host not in ("localhost", "::1") and not host.startswith("127."):
                self.log.warning(
                    "Connection %s: %s %s is plain http:// to another machine: the credential is sent unencrypted",
                    self.searchapi_conn_id,
                    name,
                    url,
                )
        overrides: dict[str, Any] = {}
        if self._requests_per_second is not None:
            overrides["requests_per_second"] = self._requests_per_second
        if self._rate_limit_conn_id is not None:
            overrides["rate_limit_conn_id"] = self._rate_limit_conn_id or None
        try:  # checked as the connection's own settings are
            return SearchApiConfig.model_validate({**dict(config), **overrides})
        except pydantic.ValidationError as err:
            error = err.errors()[0]  # only the overrides can be wrong: no secret in the input
            reason = error["msg"].replace("Input should be", "must be", 1)
            raise ValueError(f"{error['loc'][0]} {reason} (got {error['input']!r})") from None

    @cached_property
    def auth(self) -> httpx.Auth:
        """The ``httpx.Auth`` of the connection's credential."""
        return build_auth(self.config)

    @cached_property
    def limiter(self) -> Limiter:
        """The rate limiter of every call: this process's for the folder (whatever the connection), or
        the folder's in Redis (with this process's as its fallback) when ``rate_limit_conn_id`` names a
        Redis connection."""
        config = self.config
        local = shared_rate_limiter(f"folder {config.folder_id} at {config.endpoint}", config.requests_per_second)
        if not config.rate_limit_conn_id:
            return local
        from airflow_provider_searchapi.redis_limiter import shared_redis_limiter

        return shared_redis_limiter(config.rate_limit_conn_id, config.folder_id, local.max_rate, local)

    @cached_property
    def transport(self) -> SearchTransport:
        """The transport that carries requests: REST, or gRPC when the connection says so."""
        config = self.config
        common: dict[str, Any] = {
            "auth": self.auth,
            "caller": Caller(self.limiter, self._retry_policy or RetryPolicy(), self.stats),
            "timeout": config.timeout,
            "verify_tls": config.verify_tls,
        }
        if config.transport == "grpc":
            from airflow_provider_searchapi.transport.grpc import GrpcTransport

            return GrpcTransport(endpoint=config.grpc_endpoint, **common)
        return RestTransport(endpoint=config.endpoint, max_connections=self._max_connections, **common)

    def get_conn(self) -> SearchTransport:
        """Return the transport (Airflow's conventional accessor)."""
        return self.transport

    def _request(self, **query: Any) -> SearchRequest:
        if query.get("image") is not None:
            check_image(query["image"])
        folder_id = self.config.folder_id  # a bad connection raises its own, named error
        try:
            return SearchRequest.build(folder_id=folder_id, **query)
        except ValueError as err:
            raise SearchApiError(f"invalid search request: {err}") from None

    def search_by_image(
        self,
        *,
        image: bytes | None = None,
        url: str | None = None,
        cbir_id: str | None = None,
        page: int = 0,
        site: str | None = None,
        family_mode: FamilyMode | str | None = None,
    ) -> ImageSearchResult:
        """Search the web for images like the given one; return one page of results.

        :param image: the image's bytes (JPEG, PNG, GIF, WebP or BMP, at most 3 MiB); checked before
            any request is spent.
        :param url: a public image URL instead of bytes.
        :param cbir_id: the CBIR id of an earlier result instead of the image (for later pages).
        :param page: zero-based page.
        :param site: only results from this site.
        :param family_mode: adult-content filter (``none``, ``moderate``, ``strict``).
        :raises InvalidImageError: the bytes would be refused by the API.
        :raises SearchApiHTTPError: the API answered with an error (after retries where safe).
        """
        request = self._request(image=image, url=url, cbir_id=cbir_id, page=page, site=site, family_mode=family_mode)
        return self.transport.search(request)

    async def asearch_by_image(
        self,
        *,
        image: bytes | None = None,
        url: str | None = None,
        cbir_id: str | None = None,
        page: int = 0,
        site: str | None = None,
        family_mode: FamilyMode | str | None = None,
    ) -> ImageSearchResult:
        """Async twin of :meth:`search_by_image`, over async connections."""
        await self.aget_config()
        request = self._request(image=image, url=url, cbir_id=cbir_id, page=page, site=site, family_mode=family_mode)
        return await self.transport.asearch(request)

    def iter_pages(
        self,
        *,
        image: bytes | None = None,
        url: str | None = None,
        cbir_id: str | None = None,
        site: str | None = None,
        family_mode: FamilyMode | str | None = None,
        max_pages: int | None = None,
    ) -> Iterator[ImageSearchResult]:
        """Yield page 0, then later pages by CBIR id (no re-upload), until a page comes back empty.
        Should the CBIR id expire (404), the image or URL is sent again, and its new id used after.

        :param max_pages: stop after this many pages (``None``: until the results run out).
        Other parameters as in :meth:`search_by_image`.
        """
        at_most = _pages_at_most(max_pages)
        first = self.search_by_image(image=image, url=url, cbir_id=cbir_id, site=site, family_mode=family_mode)
        yield first
        cbir_id = first.cbir_id
        for page in _later_pages(first, at_most):
            try:
                result = self.search_by_image(cbir_id=cbir_id, page=page, site=site, family_mode=family_mode)
            except SearchApiHTTPError as err:
                if not _cbir_id_expired(err, image, url):
                    raise
                result = self.search_by_image(image=image, url=url, page=page, site=site, family_mode=family_mode)
            if not result.images:
                return
            cbir_id = result.cbir_id or cbir_id  # a new one once the image was sent again
            yield result

    async def aiter_pages(
        self,
        *,
        image: bytes | None = None,
        url: str | None = None,
        cbir_id: str | None = None,
        site: str | None = None,
        family_mode: FamilyMode | str | None = None,
        max_pages: int | None = None,
    ) -> AsyncIterator[ImageSearchResult]:
        """Async twin of :meth:`iter_pages`."""
        at_most = _pages_at_most(max_pages)
        search = self.asearch_by_image
        first = await search(image=image, url=url, cbir_id=cbir_id, site=site, family_mode=family_mode)
        yield first
        cbir_id = first.cbir_id
        for page in _later_pages(first, at_most):
            try:
                result = await search(cbir_id=cbir_id, page=page, site=site, family_mode=family_mode)
            except SearchApiHTTPError as err:
                if not _cbir_id_expired(err, image, url):
                    raise
                result = await search(image=image, url=url, page=page, site=site, family_mode=family_mode)
            if not result.images:
                return
            cbir_id = result.cbir_id or cbir_id  # a new one once the image was sent again
            yield result

    def close(self) -> None:
        """Close the sync connections (the async ones close with :meth:`aclose`)."""
        if "transport" in self.__dict__:
            self.transport.close()

    async def aclose(self) -> None:
        """Close the running event loop's async connections (those of a loop that ended without this
        are dropped when another loop first searches)."""
        if "transport" in self.__dict__:
            await self.transport.aclose()
        aclose_limiter = getattr(self.__dict__.get("limiter"), "aclose", None)
        if aclose_limiter is not None:
            await aclose_limiter()

    def test_connection(self) -> tuple[bool, str]:
        """Authenticate for real and make one cheap search; say what failed, without secrets
        (the *Test connection* button of the Airflow UI)."""
        if self._retry_policy is None:  # someone waits for the answer: retry briefly, not as a task does
            self._retry_policy = INTERACTIVE_RETRY_POLICY
        try:
            config = self.config
            if isinstance(self.auth, RefreshingTokenAuth):
                self.auth.get_token()
            result = self.search_by_image(image=_PROBE_IMAGE)
        except SearchApiHTTPError as err:
            return False, f"{err}{status_hint(err.status)}"
        except SearchApiError as err:
            return False, str(err)
        except Exception as err:  # noqa: BLE001 - the UI shows any failure as a message
            return False, f"{type(err).__name__}: {err}"
        finally:
            self.close()
        return True, (
            f"Connected: {config.credential.value} credential accepted for folder {config.folder_id}; "
            f"a test search returned {len(result.images)} images."
        )


def _mask_credentials(config: SearchApiConfig) -> None:
    for secret in config.secret_values():
        mask_secret(secret)


def _pages_at_most(max_pages: int | None) -> int:
    """``max_pages``, checked before any search is spent; no cap (``None``) as more than any search finds."""
    if max_pages is not None and max_pages < 1:
        raise ValueError(f"max_pages must be >= 1 (got {max_pages})")
    return max_pages or 1_000_000


def _later_pages(first: ImageSearchResult, at_most: int) -> range:
    if not first.images or not first.cbir_id:
        return range(0)
    return range(first.page + 1, first.page + at_most)


def _cbir_id_expired(err: SearchApiHTTPError, image: bytes | None, url: str | None) -> bool:
    """Whether a later page can be asked for again with the image: its CBIR id is unknown (expired)."""
    return err.status == 404 and (image is not None or url is not None)


# A 1x1 PNG: the smallest valid image, to test a connection at the price of one search.
_PROBE_IMAGE = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
