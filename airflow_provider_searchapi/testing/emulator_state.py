"""The emulator's knobs, counters and answers, shared by its REST (and gRPC) front ends."""

from __future__ import annotations

import collections
import secrets
import threading
from dataclasses import dataclass, field, fields
from typing import Any

FAULT_KINDS = ("429", "429-no-retry-after", "500", "503", "504", "stall", "drop", "garbage", "wrong-types", "giant")


@dataclass
class EmulatorSettings:
    """Knobs of the emulator; change them at any time (``emulator.settings.latency = 0.3``).

    :param latency: seconds each search waits before answering.
    :param quota_rps: searches per second allowed (token bucket, burst = one second's worth); past it
        the answer is 429. ``None``: no quota.
    :param retry_after: seconds sent in ``Retry-After`` on a quota 429 (``None``: no header).
    :param fault_rate: share (0..1) of search attempts answered with an injected fault.
    :param fault_kinds: which faults to inject, drawn evenly: ``429``, ``429-no-retry-after``, ``500``,
        ``503``, ``504``, ``stall`` (no answer for ``stall_seconds``), ``drop`` (connection closed), and
        malformed 200 answers: ``garbage`` (not JSON), ``wrong-types``, ``giant`` (a 16 MiB body).
    :param fault_attempts: faults hit only the first N attempts of the same query, so retries succeed.
    :param stall_seconds: how long a ``stall`` fault waits before answering 504.
    :param token_ttl: lifetime of minted IAM tokens, in seconds.
    :param images_per_page: results per full page.
    :param max_result_pages: pages of results per query at most (each query has 1..N, from its hash).
    :param no_results_rate: share (0..1) of queries that find nothing at all (chosen by their hash).
    :param cbir_ttl: seconds a CBIR id stays valid for later pages (``None``: forever); past it, 404.
    :param gzip_answers: gzip the REST answers of clients that accept it (as a gateway may).
    """

    latency: float = 0.0
    quota_rps: float | None = None
    retry_after: float | None = 1.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = ("429", "500", "503")
    fault_attempts: int = 1
    stall_seconds: float = 30.0
    token_ttl: float = 12 * 3600.0
    images_per_page: int = 10
    max_result_pages: int = 3
    cbir_ttl: float | None = None
    no_results_rate: float = 0.0
    gzip_answers: bool = False

    def update(self, values: dict[str, Any]) -> None:
        """Set knobs from a dict (as the ``/_emulator/settings`` endpoint receives them)."""
        known = {f.name for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown emulator setting {name!r}")
            if name == "fault_kinds":
                value = tuple(value)
                bad = set(value) - set(FAULT_KINDS)
                if bad:
                    raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {FAULT_KINDS}")
            setattr(self, name, value)


class EmulatorStats:
    """What reached the emulator; read it from any thread with :meth:`snapshot`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.search_requests = 0
            self.uploads = 0
            self.responses: collections.Counter[int] = collections.Counter()
            self.faults: collections.Counter[str] = collections.Counter()
            self.token_exchanges = 0
            self.metadata_tokens = 0
            self.searches_by_query: collections.Counter[str] = collections.Counter()
            self.in_flight = 0
            self.max_in_flight = 0
            self.arrivals: collections.deque[float] = collections.deque(maxlen=200_000)
            self.authorization_headers: collections.Counter[str] = collections.Counter()
            #: token exchanges that carried an Authorization header (they never should)
            self.iam_authorization_headers = 0
            #: (host, port) of every client connection that sent a REST search
            self.rest_connections: set[tuple[str, int]] = set()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the counters."""
        with self.lock:
            return {
                "search_requests": self.search_requests,
                "uploads": self.uploads,
                "responses": {str(k): v for k, v in sorted(self.responses.items())},
                "faults": dict(self.faults),
                "token_exchanges": self.token_exchanges,
                "metadata_tokens": self.metadata_tokens,
                "queries_answered": len(self.searches_by_query),
                "queries_answered_more_than_once": sum(1 for n in self.searches_by_query.values() if n > 1),
                "max_in_flight": self.max_in_flight,
                "iam_authorization_headers": self.iam_authorization_headers,
                "rest_connections": len(self.rest_connections),
                # seconds from the first search that arrived to the last (of the last 200,000)
                "arrival_span": self.arrivals[-1] - self.arrivals[0] if self.arrivals else 0.0,
            }


@dataclass(frozen=True)
class SearchOutcome:
    """The emulator's answer to one search, whatever the transport (REST or gRPC) carries it.

    :param status: HTTP status (200 on success).
    :param body: the result (proto3 JSON shape) or the error body (``code``, ``message``, ``details``).
    :param headers: extra response headers (``x-request-id``, ``Retry-After``).
    :param drop: close the connection instead of answering (an injected fault).
    :param raw: bytes to send as the body instead of ``body`` (a malformed answer).
    """

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    raw: bytes | None = None

    @classmethod
    def error(cls, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> SearchOutcome:
        request_id = secrets.token_hex(8)
        body = {
            "code": code,
            "message": message,
            "details": [{"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": request_id}],
        }
        return cls(status, body, {"x-request-id": request_id, **(headers or {})})
