"""Transports carry a :class:`~airflow_provider_searchapi.models.SearchRequest` to the API.

``rest.RestTransport`` (default, httpx) and ``grpc.GrpcTransport`` (the ``grpc`` extra) keep the same
contract, so that the hook and the engine never know which one is in use.
"""

from __future__ import annotations

import collections
from typing import Protocol

from airflow_provider_searchapi.models import ImageSearchResult, SearchRequest


class SearchTransport(Protocol):
    """What the hook needs of a transport."""

    #: attempts sent, each counted against the quota
    requests_sent: int
    #: failed attempts by HTTP status (or its gRPC equivalent); 0 for no answer
    failures: collections.Counter[int]

    def search(self, request: SearchRequest) -> ImageSearchResult: ...

    async def asearch(self, request: SearchRequest) -> ImageSearchResult: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...
