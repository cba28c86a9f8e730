"""An HTML page of what was found: each source image beside the images found for it.

One self-contained file: inline CSS, no script (its Content-Security-Policy forbids any), the sources'
thumbnails embedded as ``data:`` URIs; found images load from their own ``url``. Every value is escaped
and only ``http(s)`` URLs become links or pictures, so a hostile page title or URL stays text. A run's
page takes the rows as its sink commits them; the page of a whole output reads its parts a line at a
time, importing Airflow only to reach storage through a connection.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jinja2
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_searchapi.images import MAX_DECODE_BYTES, open_image
from airflow_provider_searchapi.jsonl import make_folder, read_jsonl

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from airflow_provider_searchapi.engine.sinks import Batch, JsonLinesSink

log = logging.getLogger(__name__)

#: Source images shown with their results; the rest are counted.
MAX_SOURCES = 200
#: Found images shown per source (the best ranks).
TOP_RESULTS = 8
#: Longest side of a source's embedded thumbnail, in pixels.
THUMBNAIL_SIDE = 120


def safe_url(value: Any) -> str | None:
    """``value`` if it is an absolute ``http(s)`` URL without whitespace or control characters, else
    ``None``: such a value is shown as text, never linked or loaded."""
    if not isinstance(value, str) or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def thumbnail(uri: str, *, conn_id: str | None = None) -> str | None:
    """A source image as a small JPEG ``data:`` URI made with Pillow.

    :param uri: the source image's storage URL.
    :param conn_id: the storage connection to read it with.
    :return: ``None`` for a public URL (the page loads it as it is) or what cannot be read as an image.
    """
    if "://" not in uri or uri.startswith(("http://", "https://")):
        return None
    try:
        fs, path = _storage(uri, conn_id)
        info = fs.info(path)
        if info["type"] != "file" or info["size"] > MAX_DECODE_BYTES:  # never read a folder or a pipe
            return None
        with open_image(fs.cat_file(path), name=uri) as image:
            image.draft("RGB", (THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2))  # JPEG: decode at a smaller scale
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=80)
    except Exception as err:  # noqa: BLE001 - a preview that cannot be made is left out, not fatal
        log.info("No thumbnail for %s: %s", uri, err)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class _Source:
    uri: str
    found: dict[int, dict[str, Any]] = field(default_factory=dict)  # by rank
    found_count: int = 0
    searched: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)


class Report:
    """Collects rows (results and errors) and renders the page.

    :param max_sources: source images shown; the rest are counted.
    :param top: found images shown per source.
    """

    def __init__(self, *, max_sources: int = MAX_SOURCES, top: int = TOP_RESULTS) -> None:
        self.max_sources = max_sources
        self.top = top
        self.sources: dict[str, _Source] = {}
        self.all_sources: set[str] = set()
        self.found = 0
        self.failed: set[str] = set()
        self.causes: Counter[str] = Counter()
        self.failure: Exception | None = None  # of add_batch, raised by render

    def _entry(self, uri: str) -> _Source | None:
        self.all_sources.add(uri)
        if uri not in self.sources and len(self.sources) < self.max_sources:
            self.sources[uri] = _Source(uri)
        return self.sources.get(uri)

    def add_result(self, row: dict[str, Any]) -> None:
        """One result row (a found image, or the empty row of a source with none)."""
        entry = self._entry(str(row.get("source_uri")))
        has_image = row.get("url") is not None
        self.found += has_image
        if entry is None:
            return
        entry.searched = True
        entry.found_count += has_image
        if has_image and len(entry.found) < self.top:
            entry.found.setdefault(row.get("rank") or 0, row)  # a row written again by a later run: kept once

    def add_error(self, row: dict[str, Any]) -> None:
        """One error row."""
        uri = str(row.get("source_uri"))
        entry = self._entry(uri)
        self.failed.add(uri)
        self.causes[cause(row)] += 1
        if entry is not None and len(entry.errors) < self.top:
            entry.errors.append(row)

    def add_batch(self, batch: Batch) -> None:
        """The rows of a batch a sink has just committed, errors first as it writes them. It runs inside
        the commit, so it never raises: a failure is kept, and :meth:`render` raises it."""
        try:
            for row in batch.errors:
                self.add_error(row)
            for row in batch.results:
                self.add_result(row)
        except Exception as err:  # noqa: BLE001 - the rows are committed: only the page is lost
            self.failure = self.failure or err

    def render(
        self, *, title: str, where: str, figures: dict[str, Any], source_conn_id: str | None = None
    ) -> Iterator[str]:
        """The page, in pieces.

        :param title: the page's heading.
        :param where: the output it describes (shown under the heading).
        :param figures: ``requests``, ``throttled_429``, ``elapsed_seconds`` (absent: shown as ``—``).
        :param source_conn_id: the storage connection to read the sources' thumbnails with.
        :raises ValueError: a batch could not be added (the page would be incomplete).
        """
        if self.failure is not None:
            raise ValueError(f"the run's rows could not be gathered for the page: {self.failure!r}")
        shown = {
            "Source images": _number(len(self.all_sources)),
            "Found images": _number(self.found),
            "Failed": _number(len(self.failed)),
            "Requests": _number(figures.get("requests")),
            "429 answers": _number(figures.get("throttled_429")),
            "Duration": _duration(figures.get("elapsed_seconds")),
        }
        return _template().generate(
            title=title,
            where=where,
            figures=shown,
            causes=self.causes.most_common(),
            sections=(
                (entry, thumbnail(entry.uri, conn_id=source_conn_id) or safe_url(entry.uri))
                for entry in self.sources.values()
            ),
            rest=len(self.all_sources) - len(self.sources),
            max_sources=self.max_sources,
        )


def cause(row: dict[str, Any]) -> str:
    """An error row's cause: its error class, with the HTTP status when there is one."""
    status = row.get("http_status")
    return f"{row.get('error_class')} (HTTP {status})" if status else str(row.get("error_class"))


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("airflow_provider_searchapi"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=lambda value: "" if value is None else value,
    )
    environment.filters.update(number=_number, safe_url=safe_url)
    environment.globals["cause"] = cause
    return environment.get_template("report.html.jinja")


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "—"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{seconds:.1f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def write_run_report(
    report: Report, sink: JsonLinesSink, summary: dict[str, Any], *, source_conn_id: str | None = None
) -> str:
    """Write the page of one run beside its manifest (``_manifest/<run_id>.html``) and return its URI.

    :param report: the rows of the run, as its sink committed them (``on_write=report.add_batch``).
    :param sink: the run's JSON Lines sink, after the run.
    :param summary: the run's summary (its requests, 429 answers and duration are shown).
    :param source_conn_id: the storage connection of the sources, for their thumbnails.
    """
    from airflow_provider_searchapi.engine.sources import stable_uri

    fs, where = sink.prefix.fs, stable_uri(sink.prefix).rstrip("/")
    title = f"Search by image: run {sink.run_id}"
    page = report.render(title=title, where=where, figures=summary, source_conn_id=source_conn_id)
    _write(fs, f"{sink.prefix.path.rstrip('/')}/_manifest/{sink.run_id}.html", page)
    return f"{where}/_manifest/{sink.run_id}.html"


def report_from_output(
    output_path: str, html_path: str, *, conn_id: str | None = None, source_conn_id: str | None = None
) -> Report:
    """Write the page of everything under an output folder (every run's parts) to ``html_path``.

    Requests, 429 answers and duration are the sums over the runs' manifests (``_manifest/*.json``).

    :param output_path: the ``output_path`` the runs wrote to: a local folder or a storage URL.
    :param html_path: where to write the page: a local file or a storage URL.
    :param conn_id: the storage connection of ``output_path`` (and of ``html_path`` when a URL).
    :param source_conn_id: the storage connection of the sources, for their thumbnails.
    :raises FileNotFoundError: ``output_path`` holds no ``results/`` nor ``errors/`` folder.
    :raises ValueError: a part or a manifest is not what the sink writes (naming it).
    """
    fs, base = _storage(output_path, conn_id)
    base = base.rstrip("/")
    folders = [kind for kind in ("results", "errors") if fs.isdir(f"{base}/{kind}")]
    if not folders:
        raise FileNotFoundError(f"{output_path}: no results/ or errors/ folder of JSON Lines parts here")
    report = Report()
    for kind in folders:
        add = report.add_error if kind == "errors" else report.add_result
        for part in sorted(fs.find(f"{base}/{kind}")):
            if part.endswith(".jsonl"):
                for _, row in read_jsonl(fs, part):  # a line at a time
                    add(row)
    figures: dict[str, Any] = {}
    manifests = sorted(fs.glob(f"{base}/_manifest/*.json"))
    for manifest in manifests:
        try:
            summary = json.loads(fs.cat_file(manifest))["summary"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{manifest}: not a manifest of a run ({err})") from None
        for key in ("requests", "throttled_429", "elapsed_seconds"):
            if isinstance(summary.get(key), (int, float)):
                figures[key] = figures.get(key, 0) + summary[key]
    where = f"{fs.unstrip_protocol(base)} ({len(manifests)} run{'s' if len(manifests) != 1 else ''})"
    title = "Search by image: what was found"
    _write(
        *_storage(html_path, conn_id),
        report.render(title=title, where=where, figures=figures, source_conn_id=source_conn_id),
    )
    return report


def _write(fs: AbstractFileSystem, path: str, pieces: Iterator[str]) -> None:
    make_folder(fs, path.rsplit("/", 1)[0])
    with fs.open(path, "wt", encoding="utf-8", errors="replace") as handle:  # a lone surrogate becomes "?"
        handle.writelines(pieces)


def needs_airflow(location: str, conn_id: str | None) -> bool:
    """Whether ``location`` is opened through Airflow: a connection is named (``conn_id``, or
    ``s3://conn_id@bucket/…``). Otherwise fsspec opens it, and Airflow is not imported."""
    return bool(conn_id) or ("://" in location and bool(urlsplit(location).username))


def _storage(location: str, conn_id: str | None) -> tuple[AbstractFileSystem, str]:
    """The filesystem and path of a storage URL or a local path, through Airflow when
    :func:`needs_airflow`, else straight from fsspec (as the environment grants access)."""
    if "://" not in location:  # a local path as it is: fsspec would read "::" in it as a chain of URLs
        return LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    if not needs_airflow(location, conn_id):
        return url_to_fs(location)
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(location, conn_id=conn_id)
    return path.fs, path.path
