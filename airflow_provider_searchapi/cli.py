"""Debug a ``yandex_searchapi`` connection, or look at what runs found, from a shell.

    python -m airflow_provider_searchapi search IMAGE_OR_URL [--conn-id ID] [--folder-id ID] [--pages N] [--json]
    python -m airflow_provider_searchapi check-connection [--conn-id ID] [--folder-id ID]
    python -m airflow_provider_searchapi report OUTPUT_PATH --html FILE [--conn-id ID] [--source-conn-id ID]

Standard output carries only the result; log lines, warnings and errors go to standard error, errors
as one line starting ``error:``, never holding a credential. Files and arguments are checked before
Airflow is imported, and ``report`` imports it only to use a connection.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from airflow_provider_searchapi.exceptions import (
    InvalidImageError,
    SearchApiError,
    SearchApiHTTPError,
    SearchApiResponseError,
    status_hint,
)
from airflow_provider_searchapi.images import check_image
from airflow_provider_searchapi.models import ImageSearchResult
from airflow_provider_searchapi.retry import INTERACTIVE_RETRY_POLICY

if TYPE_CHECKING:
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

EXIT_OK, EXIT_API_ERROR, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_CONN_ID = "searchapi_default"

_EPILOG = (
    "exit codes: 0 ok; 2 bad input (missing or invalid image, bad arguments, bad connection settings, "
    "unknown connection); 1 the API or IAM refused or could not be reached"
)


_FOLDER_HELP = "the folder billed, when the connection names none (a yandexcloud one may not)"


def _positive_int(text: str) -> int:
    """argparse type of ``--pages``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, a whole number (got {text!r})")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``search``, ``check-connection`` and ``report``."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_searchapi",
        description="Debug a Yandex Cloud Search API connection (type yandex_searchapi) from a shell.",
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    search = commands.add_parser(
        "search", help="search by an image file or a public image URL", description=_search.__doc__, epilog=_EPILOG
    )
    search.add_argument("image", metavar="IMAGE_OR_URL", help="a local image file, or an http(s) URL sent as is")
    search.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="connection id (%(default)s)")
    search.add_argument("--folder-id", help=_FOLDER_HELP)
    search.add_argument("--pages", type=_positive_int, default=1, help="result pages to fetch at most (default 1)")
    search.add_argument("--json", action="store_true", help="print the result pages as JSON instead of a table")
    check = commands.add_parser(
        "check-connection", help="authenticate and make one test search", description=_check.__doc__, epilog=_EPILOG
    )
    check.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="connection id (%(default)s)")
    check.add_argument("--folder-id", help=_FOLDER_HELP)
    report = commands.add_parser("report", help="an HTML page of what runs found", description=_report.__doc__)
    report.add_argument("output_path", metavar="OUTPUT_PATH", help="the output_path the runs wrote JSON Lines to")
    report.add_argument("--html", required=True, metavar="FILE", help="the page to write (a file or storage URL)")
    report.add_argument("--conn-id", help="storage connection of OUTPUT_PATH and FILE (none for local files)")
    report.add_argument("--source-conn-id", help="storage connection of the source images (for thumbnails)")
    return parser


def _query(target: str) -> dict[str, object]:
    """``url=`` for an http(s) address (nothing is downloaded), else a local file's bytes, checked."""
    if target.startswith(("http://", "https://")):
        return {"url": target}
    try:
        data = Path(target).read_bytes()
    except FileNotFoundError:
        raise InvalidImageError(f"{target}: no such file") from None
    except OSError as err:
        raise InvalidImageError(f"{target}: cannot be read ({err.strerror or type(err).__name__})") from None
    check_image(data, name=target)
    return {"image": data}


def _print_table(pages: list[ImageSearchResult], out: TextIO) -> None:
    rows = [(page.page, image) for page in pages for image in page.images]
    cbir_id = pages[0].cbir_id if pages else ""
    out.write(f"{len(rows)} images found in {len(pages)} page(s); CBIR id {cbir_id or '-'}\n")
    if rows:
        out.write(f"{'page':>4}  {'#':>3}  {'size':>11}  {'host':<28}  url\n")
    for rank, (page, image) in enumerate(rows):
        size = f"{image.width}x{image.height}"
        out.write(f"{page:>4}  {rank:>3}  {size:>11}  {image.host[:28]:<28}  {image.url}\n")


def _search(args: argparse.Namespace, query: dict[str, object], out: TextIO) -> int:
    """Search by an image (a file is uploaded; a URL is sent as is) and print the results.

    Page 0 is searched with the image, later pages with the CBIR id the first answer returned,
    until --pages pages or an empty page.
    """
    with contextlib.closing(_hook(args.conn_id, args.folder_id)) as hook:
        pages = list(hook.iter_pages(**query, max_pages=args.pages))
    if args.json:
        json.dump([page.model_dump(mode="json") for page in pages], out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        _print_table(pages, out)
    return EXIT_OK


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Authenticate with the connection's credential and make one search with a tiny image.

    Prints what the UI's Test button would show.
    """
    ok, message = _hook(args.conn_id, args.folder_id).test_connection()
    if not ok:
        err.write(f"error: {message}\n")
        return EXIT_API_ERROR
    out.write(message + "\n")
    return EXIT_OK


def _report_needs_airflow(args: argparse.Namespace) -> bool:
    from airflow_provider_searchapi.report import needs_airflow

    return bool(args.source_conn_id) or any(
        needs_airflow(where, args.conn_id) for where in (args.output_path, args.html)
    )


def _report(args: argparse.Namespace, out: TextIO) -> int:
    """Write an HTML page of the JSON Lines parts under OUTPUT_PATH: each source image beside what was found."""
    from airflow_provider_searchapi.report import report_from_output

    report = report_from_output(args.output_path, args.html, conn_id=args.conn_id, source_conn_id=args.source_conn_id)
    out.write(f"{args.html}: {len(report.all_sources):,} source images, {report.found:,} found images\n")
    return EXIT_OK


def _hook(conn_id: str, folder_id: str | None) -> SearchApiHook:
    """The connection's hook, its settings read: bad ones are bad input (exit 2), not an API error."""
    from airflow_provider_searchapi.hooks.searchapi import SearchApiHook

    hook = SearchApiHook(conn_id, folder_id=folder_id, retry_policy=INTERACTIVE_RETRY_POLICY)
    _ = hook.config
    return hook


def _logs_to(stream: TextIO) -> None:
    """Every log record (Airflow's, the provider's retry warnings) to ``stream``, never to stdout."""
    logging.basicConfig(stream=stream, level=logging.WARNING, format="%(levelname)s: %(message)s", force=True)
    for name in ("airflow_provider_searchapi", "airflow", "httpx"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True


def _exit_code(error: Exception, command: str) -> int | None:
    """1 when the API or IAM refused or could not be reached; 2 for bad input (an image, connection
    settings, an unknown connection, a report's missing or malformed parts); ``None`` for a bug."""
    if isinstance(error, (SearchApiHTTPError, SearchApiResponseError)):
        return EXIT_API_ERROR
    if isinstance(error, SearchApiError) or (command == "report" and isinstance(error, (OSError, ValueError))):
        return EXIT_BAD_INPUT
    airflow = sys.modules.get("airflow.providers.common.compat.sdk")  # imported already, if Airflow was used
    return EXIT_BAD_INPUT if airflow and isinstance(error, airflow.AirflowNotFoundException) else None


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the CLI and return its exit code (argparse itself exits 2 on bad arguments)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        query = _query(args.image) if args.command == "search" else {}
        if args.command != "report" or _report_needs_airflow(args):
            # Importing Airflow sets up its logging, which _logs_to then replaces.
            import airflow.providers.common.compat.sdk  # noqa: F401

        _logs_to(err)
        if args.command == "report":
            return _report(args, out)
        return _search(args, query, out) if args.command == "search" else _check(args, out, err)
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `... --json | head`: stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_OK
    except Exception as error:
        code = _exit_code(error, args.command)
        if code is None:
            raise
        hint = status_hint(error.status) if isinstance(error, SearchApiHTTPError) else ""
        err.write(f"error: {error}{hint}\n")  # the same hints as the UI's Test button
        return code
