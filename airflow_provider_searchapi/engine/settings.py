"""What a run is told (:class:`EnrichmentSettings`) and what it reports (:class:`RunSummary`)."""

from __future__ import annotations

import contextlib
import reprlib
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pydantic
from pydantic import Field, field_validator
from pydantic_core import ErrorDetails

from airflow_provider_searchapi.engine.ledger import Plan, Reprocess
from airflow_provider_searchapi.engine.records import failure_cause
from airflow_provider_searchapi.models import FamilyMode


@pydantic.dataclasses.dataclass(frozen=True)
class EnrichmentSettings:
    """How the pipeline searches and commits.

    :param max_pages: result pages per image (page 0 uploads; later pages reuse the CBIR id).
    :param site: only results from this site.
    :param family_mode: adult-content filter.
    :param max_concurrency: images read and searched at once (held in memory) at most.
    :param max_images: search at most this many images in this run (skipped ones do not count).
    :param downscale_oversized: shrink images over 3 MiB with Pillow instead of recording an error.
    :param commit_every: commit to the sinks once this many sources are finished (at most
        ``max_concurrency``; default half of it)…
    :param commit_seconds: …or once the oldest finished source waited this many seconds.
    :param progress_seconds: seconds between progress log lines.
    :param read_timeout: seconds one image's read may take; past it the image is recorded as failed.
    :param follow_symlinks: read local files through links that lead out of the source folder.
    :param reprocess: which sources a ledger's run searches again: ``changed``, ``never``, ``all`` or
        ``failed`` (see :class:`~airflow_provider_searchapi.engine.ledger.Reprocess`).
    """

    max_pages: int = Field(1, ge=1)
    site: str | None = None
    family_mode: FamilyMode | None = None
    max_concurrency: int = Field(16, ge=1)
    max_images: int | None = Field(None, ge=0)
    downscale_oversized: bool = False
    commit_every: int | None = Field(None, ge=1)
    commit_seconds: float = 5.0
    progress_seconds: float = 10.0
    read_timeout: float = 300.0
    follow_symlinks: bool = False
    reprocess: Reprocess = Reprocess.CHANGED

    @field_validator("family_mode", mode="before")
    @classmethod
    def _family_mode(cls, value: FamilyMode | str | None) -> FamilyMode | None:
        return FamilyMode.parse(value)

    @field_validator("reprocess", mode="before")
    @classmethod
    def _reprocess(cls, value: Reprocess | str) -> Reprocess:
        return Reprocess.parse(value)

    @property
    def batch_size(self) -> int:
        """``commit_every`` with its default applied and capped at ``max_concurrency``."""
        return min(self.commit_every or max(1, self.max_concurrency // 2), self.max_concurrency)

    @property
    def max_uncommitted(self) -> int:
        """Sources started but not yet committed, at most: what a crash makes a re-run pay again for."""
        return self.max_concurrency + 2 * self.batch_size


@contextlib.contextmanager
def one_line_errors(owner: str) -> Iterator[None]:
    """Turn pydantic's ``ValidationError`` (several lines and a link) into a one-line ``ValueError``
    naming each argument at fault and its value, cut short:
    ``SearchByImageOperator: max_concurrency must be greater than or equal to 1 (got 0)``.

    :param owner: what was given the settings (an operator's class name), the message's start.
    """
    try:
        yield
    except pydantic.ValidationError as err:
        raise ValueError(f"{owner}: " + "; ".join(map(_problem, err.errors()))) from None


def _problem(error: ErrorDetails) -> str:
    if error["type"] == "value_error":  # a validator's own words, which name the argument and the value
        return textwrap.shorten(str(error["ctx"]["error"]), 200, placeholder=" …")
    reason = error["msg"].replace("Input should be", "must be", 1)
    return f"{'.'.join(map(str, error['loc']))} {reason} (got {reprlib.repr(error['input'])})"


@dataclass
class RunSummary:
    """What a run did; small enough for XCom.

    ``skipped_done``: sources skipped as already done; ``changed``: done ones searched again because
    their object changed; ``retried``: ones searched again after a retryable error;
    ``skipped_unseen``: ones left alone by ``reprocess="failed"`` because the ledger never saw them.
    """

    listed: int = 0
    searched: int = 0
    skipped_done: int = 0
    changed: int = 0
    retried: int = 0
    skipped_unseen: int = 0
    failed: int = 0
    #: of the failed, those refused for good (the image itself): a later run skips them as done
    refused: int = 0
    result_rows: int = 0
    requests: int = 0
    throttled_429: int = 0
    elapsed_seconds: float = 0.0
    outputs: list[dict[str, Any]] = field(default_factory=list)
    #: failed sources by cause (``403 "folder … not found"``, ``invalid image: the file is empty``…)
    failure_causes: dict[str, int] = field(default_factory=dict)

    def count_plan(self, decision: Plan) -> None:
        """Count a listed source that is skipped, or searched again."""
        if decision is Plan.SKIP_DONE:
            self.skipped_done += 1
        elif decision is Plan.SKIP_UNSEEN:
            self.skipped_unseen += 1
        elif decision is Plan.CHANGED:
            self.changed += 1
        elif decision is Plan.RETRY:
            self.retried += 1

    def count_failure(self, err: BaseException, *, refused: bool = False) -> None:
        """Count a failed source under its cause (and as refused for good when it is)."""
        cause = failure_cause(err)
        self.failed += 1
        self.refused += refused
        self.failure_causes[cause] = self.failure_causes.get(cause, 0) + 1

    def top_causes(self, count: int = 3) -> str:
        """The most frequent failure causes, as ``N × cause``, for log lines."""
        ranked = sorted(self.failure_causes.items(), key=lambda item: -item[1])
        text = "; ".join(f"{n} × {cause}" for cause, n in ranked[:count])
        return text + (f"; and {len(ranked) - count} more causes" if len(ranked) > count else "")

    @property
    def processed(self) -> int:
        """Sources that this run searched or recorded as failed."""
        return self.searched + self.failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
