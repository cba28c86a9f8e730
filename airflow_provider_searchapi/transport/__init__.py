"""Transports carry a :class:`~airflow_provider_searchapi.models.SearchRequest` to the API.

``rest.RestTransport`` (default, httpx) and ``grpc.GrpcTransport`` (the ``grpc`` extra) keep the same
contract, so that the hook and the engine never know which one is in use.
"""

from __future__ import annotations

from typing import Protocol

from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest


class SearchTransport(Protocol):
    """What the hook needs of a transport."""

    def search(self, request: SearchRequest) -> ImageSearchResult: ...

    async def asearch(self, request: SearchRequest) -> ImageSearchResult: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...
