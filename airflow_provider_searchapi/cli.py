"""Debug a ``yandex_searchapi`` connection from a shell.

    python -m airflow_provider_searchapi search IMAGE_OR_URL [--conn-id ID] [--pages N] [--json]
    python -m airflow_provider_searchapi check-connection [--conn-id ID]

Exit codes: 0 ok, 2 bad input (missing file, invalid image, bad connection settings), 1 API error.
Nothing printed ever holds a credential.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_provider_searchapi.exceptions import InvalidImageError, SearchApiConfigError, SearchApiError
from airflow_provider_searchapi.hooks.searchapi import SearchApiHook
from airflow_provider_searchapi.images import check_image
from airflow_provider_searchapi.models import ImageSearchResult

EXIT_OK, EXIT_API_ERROR, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_searchapi", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="search by an image file or a public image URL")
    search.add_argument("image", metavar="IMAGE_OR_URL", help="a local image file, or an http(s) URL sent as is")
    search.add_argument("--conn-id", default=SearchApiHook.default_conn_name, help="connection id (%(default)s)")
    search.add_argument("--pages", type=int, default=1, help="result pages to fetch (default 1)")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check = commands.add_parser("check-connection", help="authenticate and make one test search")
    check.add_argument("--conn-id", default=SearchApiHook.default_conn_name, help="connection id (%(default)s)")
    return parser


def _query(target: str) -> dict[str, object]:
    """``url=`` for an http(s) address, else the bytes of a local file (checked before any call)."""
    if target.startswith(("http://", "https://")):
        return {"url": target}
    path = Path(target)
    try:
        data = path.read_bytes()
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
    if not rows:
        return
    out.write(f"{'page':>4}  {'#':>3}  {'size':>11}  {'host':<28}  url\n")
    for rank, (page, image) in enumerate(rows):
        size = f"{image.width}x{image.height}"
        out.write(f"{page:>4}  {rank:>3}  {size:>11}  {image.host[:28]:<28}  {image.url}\n")


def _search(args: argparse.Namespace, out: TextIO) -> int:
    if args.pages < 1:
        raise InvalidImageError(f"--pages must be >= 1 (got {args.pages})")
    query = _query(args.image)
    hook = SearchApiHook(args.conn_id)
    try:
        pages = list(hook.iter_pages(**query, max_pages=args.pages))
    finally:
        hook.close()
    if args.json:
        json.dump([page.model_dump(mode="json") for page in pages], out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        _print_table(pages, out)
    return EXIT_OK


def _check(args: argparse.Namespace, out: TextIO) -> int:
    hook = SearchApiHook(args.conn_id)
    _ = hook.config  # bad settings are bad input (exit 2), not an API error
    ok, message = hook.test_connection()
    out.write(message + "\n")
    return EXIT_OK if ok else EXIT_API_ERROR


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the CLI; return its exit code."""
    args = _parser().parse_args(argv)
    try:
        return _search(args, out) if args.command == "search" else _check(args, out)
    except (InvalidImageError, SearchApiConfigError, AirflowNotFoundException) as error:
        err.write(f"error: {error}\n")
        return EXIT_BAD_INPUT
    except SearchApiError as error:
        err.write(f"error: {error}\n")
        return EXIT_API_ERROR
