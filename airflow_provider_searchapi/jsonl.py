"""JSON Lines files read and written a line at a time through any fsspec filesystem (no Airflow needed)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator
from typing import Any

from fsspec import AbstractFileSystem

#: Stores of buckets and keys, where a folder needs no making and s3fs's ``makedirs`` would create a
#: missing bucket; every other filesystem (local disk, SFTP, HDFS …) gets its folders made.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss"})


def make_folder(fs: AbstractFileSystem, path: str) -> None:
    """Make the folder ``path`` and its parents unless ``fs`` is an object store (never a bucket)."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if not protocols & OBJECT_STORES:
        fs.makedirs(path, exist_ok=True)


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


def commit_lines(fs: AbstractFileSystem, folder: str, name: str, lines: Iterable[str]) -> str:
    """Write ``lines`` to ``folder/name`` so that no reader ever sees it half-written: streamed (UTF-8)
    into ``folder/_tmp/``, which readers skip and where a crash leaves its leftover, then moved into place.

    :param fs: the filesystem holding ``folder``.
    :param folder: the folder's path on ``fs``, without a trailing ``/``.
    :param name: the file's path inside ``folder``, e.g. ``results/part-1.jsonl``.
    :param lines: the text, each line with its ``\\n``.
    :return: the file's path on ``fs``.
    :raises FileNotFoundError: the folder cannot hold files (e.g. its bucket does not exist), naming the file.
    """
    final = f"{folder}/{name}"
    temporary = f"{folder}/_tmp/{name.replace('/', '-')}.{secrets.token_hex(4)}"
    make_folder(fs, f"{folder}/_tmp")
    make_folder(fs, final.rsplit("/", 1)[0])
    try:
        with fs.open(temporary, "wt", encoding="utf-8") as handle:
            handle.writelines(lines)
    except FileNotFoundError as err:  # s3fs says "The specified bucket does not exist", naming nothing
        raise FileNotFoundError(f"{fs.unstrip_protocol(final)}: {err}") from None
    fs.mv(temporary, final)
    return final


def write_and_remove(fs: AbstractFileSystem, folder: str) -> None:
    """Commit a small file into ``folder`` as :func:`commit_lines` does, and remove it: what fails on a
    folder that cannot hold the run's files (a missing bucket, no write permission), before any work.
    Removed as ``fs.mv`` removes: s3fs's bulk delete does not fail where deleting is denied, nor does a run."""
    fs.rm(commit_lines(fs, folder, f"_tmp/check-{secrets.token_hex(4)}", ["ok\n"]))
