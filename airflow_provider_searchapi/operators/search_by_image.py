"""``SearchByImageOperator``: enrich a set of images with what Yandex Images knows about them."""

from __future__ import annotations

import itertools
import reprlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowNotFoundException, BaseHook
from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from airflow_provider_searchapi.engine import (
    Enricher,
    EnrichmentSettings,
    JsonLinesSink,
    SqlSink,
    XComSink,
    images_from_paths,
    images_from_urls,
    list_images,
)
from airflow_provider_searchapi.engine.ledger import Ledger, SqlLedger
from airflow_provider_searchapi.engine.settings import one_line_errors
from airflow_provider_searchapi.engine.sinks import Sink
from airflow_provider_searchapi.engine.sources import SourceImage
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.models import FamilyMode
from airflow_provider_searchapi.report import Report, write_run_report
from airflow_provider_searchapi.retry import RetryPolicy

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The parameters that name an Airflow connection.
_CONNECTION_PARAMETERS = (
    "searchapi_conn_id",
    "rate_limit_conn_id",
    "source_conn_id",
    "output_conn_id",
    "state_conn_id",
    "sql_conn_id",
)
#: ``output="xcom"`` refuses more images than this: use object storage or SQL instead.
MAX_XCOM_IMAGES = 500


class SearchByImageError(Exception):
    """The run finished and committed its rows, but too many images failed."""


class SearchByImageRefusedError(SearchByImageError, AirflowFailException):
    """Too many images were refused for good: a retry would skip them as done and succeed, so Airflow
    fails the task without retrying it."""


class SearchByImageOperator(BaseOperator):
    """Search Yandex Images for every image of a dataset and store what is found.

    Images come from object storage (``source``) or as public URLs (``image_urls``). Each ends as result
    rows, an error row, or skipped as already done (resume). Returns (XCom) a summary of counts and outputs.

    :param source: an ``ObjectStoragePath`` URL (``s3://bucket/images/``), a glob, a single file, or a
        list of file URLs (a shard). Templated.
    :param source_conn_id: the storage connection of ``source`` (e.g. an ``aws`` one). Templated.
    :param image_urls: public image URLs, sent as they are instead of ``source``. Templated.
    :param searchapi_conn_id: the ``yandex_searchapi`` connection, or a ``yandexcloud`` one.
    :param folder_id: the folder billed for searches, when the connection names none. Templated.
    :param max_pages: result pages per image (1 page is one request). Templated.
    :param site: only results from this site. Templated.
    :param family_mode: adult-content filter: ``none``, ``moderate`` or ``strict``.
    :param max_concurrency: images read and searched at once (bounds memory and open requests).
    :param requests_per_second: the cap on calls per second, overriding the connection's.
    :param rate_limit_conn_id: a ``redis`` connection sharing one limit between every task using the
        folder, overriding the connection's (``""``: none). Templated.
    :param max_seconds_per_image: how long each search of an image may go on retrying, 429 waits included.
    :param max_images: search at most this many images in this run (already-done ones not counted).
    :param max_error_ratio: fail the task when failed ÷ processed exceeds this (after committing).
    :param output: ``"xcom"`` to return the rows in the summary (at most 500 images, or ``max_images``).
    :param output_path: an ``ObjectStoragePath`` prefix for JSON Lines parts. Templated.
    :param output_conn_id: the storage connection of ``output_path``. Templated.
    :param sql_conn_id: a SQL connection (any ``DbApiHook``) to insert rows into. Templated.
    :param sql_table: the results table (errors go to ``<sql_table>_errors``). Templated.
    :param create_table: create the tables when missing.
    :param downscale_oversized: shrink images over 3 MiB with Pillow instead of recording an error.
    :param commit_every: commit once this many images are finished (default half of ``max_concurrency``).
    :param allow_empty: succeed when ``source`` matches no file (by default the task fails, naming it).
    :param follow_symlinks: follow local links out of the source folder.
    :param state_path: an ``ObjectStoragePath`` prefix for the ledger of done images kept across runs
        (default: ``_state/`` under the untemplated part of ``output_path``; with only a SQL output,
        its tables). Templated.
    :param state_conn_id: the storage connection of ``state_path`` (default ``output_conn_id``). Templated.
    :param reprocess: which images the ledger holds are searched again: ``"changed"``, ``"never"``,
        ``"all"`` or ``"failed"`` (see ``Reprocess``). Templated.
    :param html_report: write a page of the run beside its manifest and return its URI as ``"report"``
        (default: when ``output_path`` is given).
    """

    template_fields: Sequence[str] = (
        "folder_id",
        "source",
        "source_conn_id",
        "image_urls",
        "max_pages",
        "site",
        "rate_limit_conn_id",
        "output_path",
        "output_conn_id",
        "sql_conn_id",
        "sql_table",
        "state_path",
        "state_conn_id",
        "reprocess",
    )
    ui_color = "#ffcc00"

    def __init__(
        self,
        *,
        source: str | list[str] | None = None,
        source_conn_id: str | None = None,
        image_urls: list[str] | None = None,
        searchapi_conn_id: str = SearchApiHook.default_conn_name,
        folder_id: str | None = None,
        max_pages: int = 1,
        site: str | None = None,
        family_mode: FamilyMode | str | None = None,
        max_concurrency: int = 16,
        requests_per_second: float | None = None,
        rate_limit_conn_id: str | None = None,
        max_seconds_per_image: float = 600.0,
        max_images: int | None = None,
        max_error_ratio: float = 0.0,
        output: str | None = None,
        output_path: str | None = None,
        output_conn_id: str | None = None,
        sql_conn_id: str | None = None,
        sql_table: str | None = None,
        create_table: bool = True,
        downscale_oversized: bool = False,
        commit_every: int | None = None,
        allow_empty: bool = False,
        follow_symlinks: bool = False,
        state_path: str | None = None,
        state_conn_id: str | None = None,
        reprocess: str = "changed",
        html_report: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if (source is None) == (image_urls is None):
            raise ValueError("give exactly one of source (object storage) or image_urls (public URLs)")
        if isinstance(image_urls, str) and "{{" not in image_urls:
            raise _not_a_list(image_urls)
        if output not in (None, "xcom"):
            raise ValueError(
                f"output must be 'xcom' or None (got {output!r}); use output_path or sql_conn_id for storage"
            )
        if output is None and output_path is None and sql_conn_id is None:
            raise ValueError("say where results go: output='xcom', output_path=… and/or sql_conn_id=… with sql_table=…")
        if output == "xcom" and (output_path or sql_conn_id):
            raise ValueError("output='xcom' cannot be combined with output_path or sql_conn_id")
        if (sql_conn_id is None) != (sql_table is None):
            raise ValueError("sql_conn_id and sql_table go together")
        if html_report and not output_path:
            raise ValueError("html_report=True needs output_path: the page is written beside the run's manifest")
        if not 0.0 <= max_error_ratio <= 1.0:
            raise ValueError(f"max_error_ratio must be between 0 and 1 (got {max_error_ratio})")
        prefix = _static_prefix(output_path) if output_path else None
        if prefix and "outlets" not in kwargs:
            kwargs["outlets"] = [Asset(prefix)]
        super().__init__(**kwargs)
        self.source = source
        self.source_conn_id = source_conn_id
        self.image_urls = image_urls
        self.searchapi_conn_id = searchapi_conn_id
        self.folder_id = folder_id
        self.max_pages = max_pages
        self.site = site
        self.requests_per_second = requests_per_second
        self.rate_limit_conn_id = rate_limit_conn_id
        self.max_seconds_per_image = max_seconds_per_image
        self.max_error_ratio = max_error_ratio
        self.output_mode = output  # "output" itself is BaseOperator's XComArg property
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.sql_conn_id = sql_conn_id
        self.sql_table = sql_table
        self.create_table = create_table
        self.allow_empty = allow_empty
        self.state_path = state_path if state_path is not None else (f"{prefix}/_state/" if prefix else None)
        self.state_conn_id = state_conn_id
        self.reprocess = reprocess
        self.html_report = bool(output_path) if html_report is None else html_report
        #: the engine's settings, checked now (the templated ones again once rendered, at execute)
        templated = {"max_pages": max_pages, "reprocess": reprocess}
        with one_line_errors(type(self).__name__):
            self.settings = EnrichmentSettings(
                family_mode=family_mode,
                max_concurrency=max_concurrency,
                max_images=max_images,
                downscale_oversized=downscale_oversized,
                commit_every=commit_every,
                follow_symlinks=follow_symlinks,
                **{name: value for name, value in templated.items() if "{" not in str(value)},
            )

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Map the operator (``.partial(...).expand(...)``), declaring the Asset of a static ``output_path``
        here: Airflow takes a mapped task's outlets from these arguments, never from ``__init__``."""
        output_path = kwargs.get("output_path")
        prefix = _static_prefix(output_path) if isinstance(output_path, str) else None
        if prefix and "outlets" not in kwargs:
            kwargs["outlets"] = [Asset(prefix)]
        return super().partial(**kwargs)

    @cached_property
    def hook(self) -> SearchApiHook:
        """The Search API hook of this task."""
        return SearchApiHook(
            self.searchapi_conn_id,
            folder_id=self.folder_id or None,
            requests_per_second=self.requests_per_second,
            rate_limit_conn_id=self.rate_limit_conn_id,
            retry_policy=RetryPolicy(max_total_seconds=self.max_seconds_per_image),
            max_connections=max(10, self.settings.max_concurrency),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        with one_line_errors(type(self).__name__):  # the templated settings, rendered
            settings = replace(
                self.settings, max_pages=self.max_pages, site=self.site or None, reprocess=self.reprocess
            )
        self._check_connections()
        sources = self._sources()
        xcom_sink = XComSink() if self.output_mode == "xcom" else None
        bounded = settings.max_images is not None and settings.max_images <= MAX_XCOM_IMAGES
        if xcom_sink is not None and not bounded:  # max_images alone keeps the return value small
            sources = iter(_at_most(sources, MAX_XCOM_IMAGES))
        report = Report() if self.html_report else None
        sinks: list[Sink] = [xcom_sink] if xcom_sink is not None else self._storage_sinks(report)

        summary = Enricher(self.hook, sinks, settings, self._ledger(sinks)).run(sources)
        result = summary.to_dict()
        if xcom_sink is not None:
            result["records"] = xcom_sink.results
            result["errors"] = xcom_sink.errors
        if report is not None:
            result["report"] = self._write_report(report, sinks, result)
        self.log.info(
            "Searched %d images (%d result rows; %d changed, %d retried), %d failed, %d skipped as already done; "
            "outputs: %s",
            summary.searched,
            summary.result_rows,
            summary.changed,
            summary.retried,
            summary.failed,
            summary.skipped_done,
            summary.outputs,
        )
        if summary.processed and summary.failed / summary.processed > self.max_error_ratio:
            refused = summary.refused / summary.processed > self.max_error_ratio
            raise (SearchByImageRefusedError if refused else SearchByImageError)(
                f"{summary.failed} of {summary.processed} images failed "
                f"({summary.failed / summary.processed:.1%} > max_error_ratio {self.max_error_ratio:.1%}): "
                f"{summary.top_causes()}; "
                f"the errors are in {_errors_location(summary.outputs)}. Everything else is committed: "
                + (
                    f"{summary.refused} images were refused for good, which a retry would skip as done: "
                    "failing without retries."
                    if refused
                    else "re-running the task searches only what is not done."
                )
            )
        return result

    def _check_connections(self) -> None:
        """Refuse a connection id that names no connection, naming its parameter: storage would
        otherwise fall back on whatever credentials the worker has, or ignore it (local paths)."""
        for parameter in _CONNECTION_PARAMETERS:
            conn_id = getattr(self, parameter)
            try:
                if conn_id:
                    BaseHook.get_connection(conn_id)
            except AirflowNotFoundException:
                raise ValueError(f"{parameter} {conn_id!r}: no Airflow connection has this id") from None

    def _sources(self) -> Iterator[SourceImage]:
        if isinstance(self.image_urls, str):  # as rendered from a template
            raise _not_a_list(self.image_urls)
        if self.image_urls is not None:
            return images_from_urls(self.image_urls)
        if isinstance(self.source, str):
            return list_images(
                self.source,
                conn_id=self.source_conn_id or None,
                allow_empty=self.allow_empty,
                follow_symlinks=self.settings.follow_symlinks,
            )
        return images_from_paths(self.source or [], conn_id=self.source_conn_id or None)

    def _storage_sinks(self, report: Report | None) -> list[Sink]:
        for name in ("output_path", "sql_conn_id", "sql_table"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ValueError(f"{name} rendered empty: the results would go nowhere; check its template")
        sinks: list[Sink] = []
        if self.output_path:
            path = ObjectStoragePath(self.output_path, conn_id=self.output_conn_id or None)
            sinks.append(JsonLinesSink(path, on_write=report.add_batch if report else None))
        if self.sql_conn_id and self.sql_table:
            sinks.append(SqlSink(self.sql_conn_id, self.sql_table, create_table=self.create_table))
        return sinks

    def _ledger(self, sinks: list[Sink]) -> Ledger | SqlLedger | None:
        if not self.state_path:
            only_sql = len(sinks) == 1 and isinstance(sinks[0], SqlSink)
            return SqlLedger(sinks[0]) if only_sql else None
        conn_id = self.state_conn_id if self.state_conn_id is not None else self.output_conn_id
        return Ledger(ObjectStoragePath(self.state_path, conn_id=conn_id or None))

    def _write_report(self, report: Report, sinks: list[Sink], summary: dict[str, Any]) -> str | None:
        """The run's page, written beside its manifest; ``None`` (and a warning) if it cannot be."""
        sink = next(sink for sink in sinks if isinstance(sink, JsonLinesSink))
        try:
            uri = write_run_report(report, sink, summary, source_conn_id=self.source_conn_id or None)
        except Exception as err:  # noqa: BLE001 - the rows are committed: a missing page fails nothing
            self.log.warning("html_report: the page of run %s could not be written: %s", sink.run_id, err)
            return None
        self.log.info("Report of this run: %s", uri)
        return uri


def _at_most(sources: Iterator[SourceImage], limit: int) -> list[SourceImage]:
    listed = list(itertools.islice(sources, limit + 1))
    if len(listed) > limit:
        raise ValueError(
            f"output='xcom' takes at most {limit} images and the source holds more: "
            "write to object storage (output_path=…) or SQL (sql_conn_id=…, sql_table=…) instead"
        )
    return listed


def _not_a_list(urls: str) -> ValueError:
    """The error of ``image_urls`` given as a string, which would be searched character by character."""
    return ValueError(
        f"SearchByImageOperator: image_urls must be a list of URLs, not a string ({reprlib.repr(urls)}); "
        "a template renders a string unless the DAG has render_template_as_native_obj=True"
    )


def _static_prefix(output_path: str) -> str | None:
    """The folder of a templated path known at parse time, as the URI of the Asset the task updates
    (``s3://b/results`` of ``s3://b/results/date={{ ds }}/``), or ``None`` when that part is not a URI of
    its own (``"{{ params.out }}{{ ds }}/"``)."""
    static = output_path.split("{{", 1)[0].split("{%", 1)[0]
    prefix = (static if static == output_path else static.rsplit("/", 1)[0]).rstrip("/")
    scheme, _, rest = prefix.partition("://")
    if not rest or not scheme.isidentifier() or not rest.strip("/"):
        return None
    return prefix


def _errors_location(outputs: list[dict[str, Any]]) -> str:
    places = [o.get("errors") or o.get("errors_table") or o.get("xcom") for o in outputs]
    return ", ".join(str(p) for p in places if p) or "the task log"
