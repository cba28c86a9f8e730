"""An HTML page of what was found: each source image beside the images found for it.

The page is one self-contained file: inline CSS, no script (a Content-Security-Policy forbids any),
the sources' thumbnails embedded as ``data:`` URIs. Found images are loaded by the browser from their
own ``url``. Every value is HTML-escaped, and only ``http(s)`` URLs become links or pictures: a
hostile page title or URL in a result stays text.

Rows are read from JSON Lines parts a line at a time; the page keeps the first ``max_sources`` sources
with their ``top`` best results, and counts the rest.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import ObjectStoragePath

from airflow_provider_searchapi.engine.sinks import JsonLinesSink
from airflow_provider_searchapi.engine.sources import MAX_READ_BYTES_FOR_DOWNSCALE, stable_uri
from airflow_provider_searchapi.images import open_image

log = logging.getLogger(__name__)

#: Source images shown with their results; the rest are counted.
MAX_SOURCES = 200
#: Found images shown per source (the best ranks).
TOP_RESULTS = 8
#: Longest side of a source's embedded thumbnail, in pixels.
THUMBNAIL_SIDE = 120

_CSP = "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline'"
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{background:#fff;padding:16px 24px;border-bottom:1px solid #ddd}
h1{font-size:20px;margin:0 0 4px}.where{color:#666;margin:0 0 12px;word-break:break-all}
.figures{display:flex;flex-wrap:wrap;gap:8px 28px;margin:0}.figures dt{color:#666;font-size:12px}
.figures dd{margin:0;font-size:18px;font-weight:600}.causes{margin:10px 0 0;padding-left:18px;color:#a33}
main{padding:8px 24px 24px}.source{display:flex;gap:16px;background:#fff;border:1px solid #ddd;
border-radius:6px;padding:12px;margin:12px 0}.query{flex:0 0 140px;font-size:12px;word-break:break-all}
.query img{display:block;max-width:120px;max-height:120px;border:2px solid #fc0;margin-bottom:4px}
.found{display:flex;flex-wrap:wrap;gap:10px;list-style:none;margin:0;padding:0;flex:1}
.found li{width:118px;font-size:12px}.found a,.found .result{color:inherit;text-decoration:none;display:block}
.found img{width:116px;height:88px;object-fit:contain;background:#eee;display:block}
.found .title{display:block;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.found .meta{color:#666;display:block;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.found a:hover .title{text-decoration:underline}
.none,.nopic{color:#888;font-style:italic}.nopic{width:116px;height:88px;background:#eee;display:flex;
align-items:center;justify-content:center}.errors{margin:6px 0 0;padding-left:18px;color:#a33}
.more{color:#666}
"""


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
    """A source image as a small JPEG ``data:`` URI made with Pillow; ``None`` when it cannot be read
    (or is a public URL, which the page loads as it is)."""
    if "://" not in uri or uri.split("://", 1)[0] in ("http", "https"):
        return None
    try:
        path = ObjectStoragePath(uri, conn_id=conn_id)
        if not path.fs.isfile(path.path):  # a folder, a device, a pipe: never read
            return None
        with path.fs.open(path.path, "rb") as handle:  # through the filesystem: no lineage recorded
            data = handle.read(MAX_READ_BYTES_FOR_DOWNSCALE + 1)
        if len(data) > MAX_READ_BYTES_FOR_DOWNSCALE:
            return None
        with open_image(data, name=uri) as image:
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
    found: list[dict[str, Any]] = field(default_factory=list)
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

    def _entry(self, uri: str) -> _Source | None:
        self.all_sources.add(uri)
        entry = self.sources.get(uri)
        if entry is None and len(self.sources) < self.max_sources:
            entry = self.sources[uri] = _Source(uri)
        return entry

    def add_result(self, row: dict[str, Any]) -> None:
        """One result row (a found image, or the empty row of a source with none)."""
        entry = self._entry(str(row.get("source_uri")))
        has_image = row.get("url") is not None
        self.found += has_image
        if entry is None:
            return
        entry.searched = True
        if has_image:
            entry.found_count += 1
            if len(entry.found) < self.top and all(kept.get("rank") != row.get("rank") for kept in entry.found):
                entry.found.append(row)

    def add_error(self, row: dict[str, Any]) -> None:
        """One error row."""
        uri = str(row.get("source_uri"))
        entry = self._entry(uri)
        self.failed.add(uri)
        self.causes[cause(row)] += 1
        if entry is not None and len(entry.errors) < self.top:
            entry.errors.append(row)

    def add_part(self, fs: Any, path: str, *, errors: bool) -> None:
        """Read one JSON Lines part a line at a time.

        :raises ValueError: a line is not a JSON object (naming the part and the line).
        """
        with fs.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}, line {number}: not a JSON object")
                (self.add_error if errors else self.add_result)(row)

    def render(
        self, *, title: str, where: str, figures: dict[str, Any], source_conn_id: str | None = None
    ) -> Iterator[str]:
        """The page, in pieces.

        :param title: the page's heading.
        :param where: the output it describes (shown under the heading).
        :param figures: ``requests``, ``throttled_429``, ``elapsed_seconds`` (absent: shown as ``—``).
        :param source_conn_id: the storage connection to read the sources' thumbnails with.
        """
        esc = _escape
        yield (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>\n"
            f'<header><h1>{esc(title)}</h1><p class="where">{esc(where)}</p><dl class="figures">'
        )
        shown = {
            "Source images": f"{len(self.all_sources):,}",
            "Found images": f"{self.found:,}",
            "Failed": f"{len(self.failed):,}",
            "Requests": _number(figures.get("requests")),
            "429 answers": _number(figures.get("throttled_429")),
            "Duration": _duration(figures.get("elapsed_seconds")),
        }
        yield "".join(f"<div><dt>{esc(name)}</dt><dd>{esc(value)}</dd></div>" for name, value in shown.items())
        yield "</dl>"
        if self.causes:
            items = "".join(f"<li>{esc(name)}: {count:,}</li>" for name, count in self.causes.most_common())
            yield f'<ul class="causes" aria-label="Failures by cause">{items}</ul>'
        yield "</header>\n<main>\n"
        for entry in self.sources.values():
            yield self._section(entry, source_conn_id)
        rest = len(self.all_sources) - len(self.sources)
        if rest:
            shown_first = f"the page shows the first {self.max_sources:,}"
            yield f'<p class="more">…and {rest:,} more source images, not shown ({shown_first}).</p>\n'
        yield "</main></body></html>\n"

    def _section(self, entry: _Source, source_conn_id: str | None) -> str:
        esc = _escape
        picture = thumbnail(entry.uri, conn_id=source_conn_id) or safe_url(entry.uri)
        preview = f'<img src="{esc(picture)}" alt="" referrerpolicy="no-referrer">' if picture else ""
        name = entry.uri.rstrip("/").rsplit("/", 1)[-1] or entry.uri
        parts = [
            f'<section class="source"><div class="query">{preview}'
            f'<strong title="{esc(entry.uri)}">{esc(name)}</strong>'
            f"<br>{entry.found_count:,} found</div>"
        ]
        if entry.found:
            items = "".join(_found(row) for row in sorted(entry.found, key=lambda row: row.get("rank") or 0))
            parts.append(f'<ol class="found">{items}</ol>')
        elif entry.searched:
            parts.append('<p class="none">Nothing found.</p>')
        if entry.errors:
            items = "".join(
                f"<li>{esc(row.get('stage'))}: {esc(cause(row))} — {esc(row.get('message'))}</li>"
                for row in entry.errors
            )
            parts.append(f'<ul class="errors">{items}</ul>')
        return "".join(parts) + "</section>\n"


def cause(row: dict[str, Any]) -> str:
    """An error row's cause: its error class, with the HTTP status when there is one."""
    status = row.get("http_status")
    return f"{row.get('error_class')} (HTTP {status})" if status else str(row.get("error_class"))


def _found(row: dict[str, Any]) -> str:
    esc = _escape
    url, page_url = safe_url(row.get("url")), safe_url(row.get("page_url"))
    picture = (
        f'<img src="{esc(url)}" alt="" loading="lazy" referrerpolicy="no-referrer">'
        if url
        else '<span class="nopic">no picture</span>'
    )
    title = esc(row.get("page_title") or row.get("page_url") or "")
    body = (
        f'{picture}<span class="title">{title}</span><span class="meta">{esc(row.get("host") or "")}</span>'
        f'<span class="meta">{esc(row.get("width"))}×{esc(row.get("height"))}</span>'
    )
    if page_url:
        return (
            f'<li><a href="{esc(page_url)}" title="{title}" rel="noopener noreferrer" target="_blank">{body}</a></li>'
        )
    return f'<li><span class="result" title="{title}">{body}</span></li>'


def _escape(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


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


def write_run_report(sink: JsonLinesSink, summary: dict[str, Any], *, source_conn_id: str | None = None) -> str:
    """Write the page of one run beside its manifest (``_manifest/<run_id>.html``) and return its URI.

    :param sink: the run's JSON Lines sink, after the run (its parts are read back).
    :param summary: the run's summary (its requests, 429 answers and duration are shown).
    :param source_conn_id: the storage connection of the sources, for their thumbnails.
    """
    fs, base = sink.prefix.fs, sink.prefix.path.rstrip("/")
    report = Report()
    for part in sink.parts:
        folder = part.rsplit("/", 2)[-2]
        if folder in ("results", "errors"):
            report.add_part(fs, part, errors=folder == "errors")
    pieces = report.render(
        title=f"Search by image: run {sink.run_id}",
        where=stable_uri(sink.prefix),
        figures=summary,
        source_conn_id=source_conn_id,
    )
    fs.makedirs(f"{base}/_manifest", exist_ok=True)
    with fs.open(f"{base}/_manifest/{sink.run_id}.html", "wt", encoding="utf-8") as handle:
        handle.writelines(pieces)
    return f"{stable_uri(sink.prefix).rstrip('/')}/_manifest/{sink.run_id}.html"


def report_from_output(
    output_path: str,
    html_path: str,
    *,
    conn_id: str | None = None,
    source_conn_id: str | None = None,
) -> Report:
    """Write the page of everything under an output folder (every run's parts) to ``html_path``.

    Requests, 429 answers and duration are the sums over the runs' manifests (``_manifest/*.json``).

    :param output_path: the ``output_path`` the runs wrote to (any ``ObjectStoragePath`` URL).
    :param html_path: where to write the page: a local file or an ``ObjectStoragePath`` URL.
    :param conn_id: the storage connection of ``output_path`` (and of ``html_path`` when a URL).
    :param source_conn_id: the storage connection of the sources, for their thumbnails.
    :raises FileNotFoundError: ``output_path`` holds no ``results/`` nor ``errors/`` folder.
    :raises ValueError: a part or a manifest is not what the sink writes (naming it).
    """
    prefix = _storage_path(output_path, conn_id)
    fs, base = prefix.fs, prefix.path.rstrip("/")
    folders = [kind for kind in ("results", "errors") if fs.isdir(f"{base}/{kind}")]
    if not folders:
        raise FileNotFoundError(f"{output_path}: no results/ or errors/ folder of JSON Lines parts here")
    report = Report()
    for kind in folders:
        for part in sorted(fs.find(f"{base}/{kind}")):
            if part.endswith(".jsonl"):
                report.add_part(fs, part, errors=kind == "errors")
    figures: dict[str, Any] = {}
    manifests = sorted(fs.glob(f"{base}/_manifest/*.json")) if fs.isdir(f"{base}/_manifest") else []
    for manifest in manifests:
        try:
            summary = json.loads(fs.cat_file(manifest))["summary"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{manifest}: not a manifest of a run ({err})") from None
        for key in ("requests", "throttled_429", "elapsed_seconds"):
            if isinstance(summary.get(key), (int, float)):
                figures[key] = figures.get(key, 0) + summary[key]
    runs = f"{len(manifests)} run{'s' if len(manifests) != 1 else ''}"
    pieces = report.render(
        title="Search by image: what was found",
        where=f"{stable_uri(prefix)} ({runs})",
        figures=figures,
        source_conn_id=source_conn_id,
    )
    target = _storage_path(html_path, conn_id)
    with target.fs.open(target.path, "wt", encoding="utf-8") as handle:
        handle.writelines(pieces)
    return report


def _storage_path(location: str, conn_id: str | None) -> ObjectStoragePath:
    """A URL as it is (with the connection), a local path as a ``file://`` URL."""
    if "://" in location:
        return ObjectStoragePath(location, conn_id=conn_id)
    return ObjectStoragePath(f"file://{os.path.abspath(os.path.expanduser(location))}")
