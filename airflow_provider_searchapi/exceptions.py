"""Errors raised by the provider. None of them ever carries a credential in its text."""

from __future__ import annotations

import re
import ssl


class SearchApiError(Exception):
    """Base class of every error this provider raises."""


class SearchApiConfigError(SearchApiError, ValueError):
    """The connection's settings are missing, malformed or contradictory.

    :param field: the connection field at fault (``folder_id``, ``service_account_json`` …).
    :param problem: what is wrong with it, and what to do; never the secret itself.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"connection field {field!r}: {problem}")


class InvalidImageError(SearchApiError, ValueError):
    """An image the API would refuse (empty, too large, not an accepted format); raised before any request."""


class SearchApiResponseError(SearchApiError):
    """The API answered 200 with a body we cannot read as a search result."""


#: HTTP statuses worth a retry: no answer (0), quota (429), transient server trouble.
_RETRYABLE_STATUSES = frozenset({0, 429, 500, 502, 503, 504})


class SearchApiHTTPError(SearchApiError):
    """The Search API answered with an error, or did not answer.

    :param status: HTTP status of the answer (0 when there was no answer, e.g. a timeout).
    :param message: the API's own message, or a description of the transport failure (redacted).
    :param request_id: the request id to quote to support: the API's, else our ``x-client-request-id``.
    :param grpc_code: the gRPC status code carried in the error body, when present.
    :param retry_after: seconds the server asked to wait (``Retry-After``).
    :param retryable: whether trying again later may succeed; by default, from the status.
    """

    #: the service that failed, as error messages name it
    service = "Search API"

    def __init__(
        self,
        status: int,
        message: str,
        *,
        request_id: str | None = None,
        grpc_code: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.status = status
        self.message = redact(message)
        self.request_id = request_id
        self.grpc_code = grpc_code
        self.retry_after = retry_after
        self.retryable = status in _RETRYABLE_STATUSES if retryable is None else retryable
        where = f" (request id {request_id})" if request_id else ""
        super().__init__(f"{self.service} error {status}: {self.message}{where}")


class SearchApiAuthError(SearchApiHTTPError):
    """Getting a credential failed: IAM or the VM metadata service refused, or could not be reached
    (status 0). Retried like the Search API's own failures."""

    service = "IAM"


class SearchApiSetupError(SearchApiError):
    """A run was stopped early: its first images all failed for a reason of the setup (credential,
    folder, endpoint), not of the images.

    :param message: what stopped the run.
    :param cause: the last such failure.
    """

    def __init__(self, message: str, cause: SearchApiHTTPError) -> None:
        self.cause = cause
        super().__init__(message)


def is_setup_failure(err: BaseException) -> bool:
    """Whether a failed search says more about the setup than about the image: the credential or the
    folder refused (401, 403), the endpoint wrong (404) or unreachable after every retry (0)."""
    return isinstance(err, SearchApiHTTPError) and err.status in (0, 401, 403, 404)


_STATUS_HINTS = {
    0: " — is the endpoint right and reachable from the worker?",
    401: " — the credential was refused: check the key, API key or token (expired?).",
    403: " — permission denied: check folder_id and that the service account has the Search API role on it.",
    404: " — check the endpoint URL.",
}


def status_hint(status: int) -> str:
    """A short hint at the likely fix for a failed call's HTTP status (empty when there is none)."""
    return _STATUS_HINTS.get(status, "")


#: What credentials look like in text: PEM keys, Authorization values, IAM tokens, API keys, OAuth tokens.
_CREDENTIAL_LIKE = re.compile(
    r"-----BEGIN[^-]*PRIVATE KEY-----.*?(-----END[^-]*PRIVATE KEY-----|$)"
    r"|\b(?i:bearer|api-key)\s+\S+"
    r"|\bt1\.[A-Za-z0-9_.-]{16,}"
    r"|\bAQVN[A-Za-z0-9_-]{16,}"
    r"|\by[0-3]_[A-Za-z0-9_-]{16,}",
    re.DOTALL,
)


def redact(text: str) -> str:
    """``text`` with whatever looks like a credential replaced by ``[redacted]`` (a server may quote what
    it was sent in its error messages, which end up in logs and error rows)."""
    return _CREDENTIAL_LIKE.sub("[redacted]", text)


def certificate_refused(err: BaseException | None) -> bool:
    """Whether a connection failed because the server's TLS certificate could not be verified."""
    while err is not None:
        if isinstance(err, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
