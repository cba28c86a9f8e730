"""The rows the engine writes: one per found image (or one per source with no hit), one per error.

The schema is documented in ``docs/operator.md``; columns keep this order in JSON Lines and SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_searchapi.engine.sources import SourceImage
from airflow_provider_searchapi.exceptions import (
    InvalidImageError,
    SearchApiAuthError,
    SearchApiError,
    SearchApiHTTPError,
    SearchApiSetupError,
    is_setup_failure,
    status_hint,
)
from airflow_provider_searchapi.models import ImageSearchResult

if TYPE_CHECKING:
    from airflow_provider_searchapi.config import SearchApiConfig

RESULT_COLUMNS: tuple[str, ...] = (
    "source_uri",
    "source_size",
    "source_etag",
    "source_mtime",
    "cbir_id",
    "page",
    "rank",
    "url",
    "format",
    "width",
    "height",
    "passage",
    "host",
    "page_title",
    "page_url",
    "searched_at",
)

ERROR_COLUMNS: tuple[str, ...] = (
    "source_uri",
    "stage",
    "error_class",
    "http_status",
    "message",
    "request_id",
    "retryable",
    "failed_at",
)

#: Stages at which an image can fail.
STAGE_READ, STAGE_VALIDATE, STAGE_API = "read", "validate", "api"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def result_rows(source: SourceImage, pages: Sequence[ImageSearchResult], size: int | None) -> list[dict[str, Any]]:
    """Rows for one searched source, ``rank`` counting found images across pages from 0; a single row
    with empty result columns when nothing was found."""
    head = {
        "source_uri": source.uri,
        "source_size": size if size is not None else source.size,
        "source_etag": source.etag,
        "source_mtime": source.mtime,
        "cbir_id": pages[0].cbir_id if pages else None,
    }
    searched_at = utc_now()
    found = [(page.page, image) for page in pages for image in page.images]
    rows = [
        {**head, "page": number, "rank": rank, **image.model_dump(mode="json"), "searched_at": searched_at}
        for rank, (number, image) in enumerate(found)
    ]
    return rows or [{**dict.fromkeys(RESULT_COLUMNS), **head, "searched_at": searched_at}]


def failure_cause(err: BaseException) -> str:
    """What a failure says of its cause without naming its source, so that failures group by cause."""
    if isinstance(err, SearchApiHTTPError):
        return f"{err.service} {err.status or 'no answer'}: {err.message[:160]}"
    if isinstance(err, InvalidImageError):
        return "invalid image: " + str(err).split(": ", 1)[-1][:160]
    if isinstance(err, OSError) and err.strerror:
        return f"{type(err).__name__}: {err.strerror}"
    return type(err).__name__


def error_row(source: SourceImage, stage: str, err: BaseException) -> dict[str, Any]:
    """The row recording why a source failed at ``stage`` (``validate`` for an image refused by its
    content); the message never holds a credential.

    ``retryable`` is 1 when a later run should search the source again (transient or configuration
    trouble), 0 when the image itself is refused (such a source counts as done).
    """
    stage = STAGE_VALIDATE if isinstance(err, InvalidImageError) else stage
    status = err.status if isinstance(err, SearchApiHTTPError) else None
    request_id = err.request_id if isinstance(err, SearchApiHTTPError) else None
    message = str(err) if isinstance(err, (SearchApiError, OSError, ValueError)) else f"{type(err).__name__}: {err}"
    return {
        "source_uri": source.uri,
        "stage": stage,
        "error_class": type(err).__name__,
        "http_status": status,
        "message": message[:2000],
        "request_id": request_id,
        "retryable": 0 if stage == STAGE_VALIDATE or status == 400 else 1,
        "failed_at": utc_now(),
    }


#: A run whose first images fail this many times for a reason of the setup (and none succeed) stops.
SETUP_FAILURES_TO_STOP = 5


class SetupBreaker:
    """Stops a run whose first images all fail for a reason of the setup (credential, folder, endpoint)."""

    def __init__(self) -> None:
        self.failures = 0

    def check(self, err: Exception, *, searched: int, config: SearchApiConfig) -> None:
        """Count ``err`` if it is the setup's and nothing was searched yet; at the limit, raise
        :class:`~airflow_provider_searchapi.exceptions.SearchApiSetupError`."""
        if searched or not is_setup_failure(err):
            return
        self.failures += 1
        if self.failures < SETUP_FAILURES_TO_STOP:
            return
        assert isinstance(err, SearchApiHTTPError)  # what is_setup_failure holds
        endpoint = config.grpc_endpoint if config.transport == "grpc" else config.endpoint
        where = "" if isinstance(err, SearchApiAuthError) else f" (endpoint {endpoint}, folder {config.folder_id})"
        raise SearchApiSetupError(
            f"Stopped: the first {self.failures} images all failed and none succeeded, so the setup is at "
            f"fault, not the images: {err}{where}{status_hint(err.status)} What finished is committed; "
            "re-run once the connection is fixed.",
            err,
        ) from None
