"""JSON Lines files read a line at a time through any fsspec filesystem (no Airflow needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fsspec import AbstractFileSystem


def read_jsonl(fs: AbstractFileSystem, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` for each non-blank line of a JSON Lines file, streamed.

    :param fs: the filesystem holding the file.
    :param path: the file's path on ``fs``.
    :raises ValueError: a line is not a JSON object (naming the file and the line).
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
            yield number, row
