"""Listing a storage URL (a file, a folder or a glob) as a stream of sources, in the store's order.

A local folder is read with ``os.scandir`` entry by entry, an S3 prefix page by page: memory does not
grow with the number of objects, and the first search starts at once.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from airflow.sdk import ObjectStoragePath
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import glob_translate

from airflow_provider_searchapi.engine.sources import SourceImage, local_path, source_from_info, stable_uri

log = logging.getLogger(__name__)

_GLOB_CHARS = re.compile(r"[*?\[]")


def glob_matcher(pattern: str) -> re.Pattern[str]:
    """The regular expression a glob's paths (relative to its folder) must match: fsspec's translation,
    with ``**.jpg`` read as ``**/*.jpg`` (any depth; fsspec wants ``**`` as a whole component).

    :raises ValueError: ``**`` inside a name.
    """
    return re.compile(glob_translate(re.sub(r"(^|/)\*\*(?=[^/])", r"\1**/*", pattern)))


def list_images(
    source: str, *, conn_id: str | None = None, allow_empty: bool = False, follow_symlinks: bool = False
) -> Iterator[SourceImage]:
    """Stream the files under an object-storage URL.

    :param source: a file (``s3://b/cat.jpg``), a folder (``s3://b/images/``: every file below it) or
        a glob (``s3://b/images/**/*.jpg``: ``**`` spans folders, ``*`` and ``?`` stay within one). A
        name that exists is taken as it is, even with glob characters (``photos [2020]/``).
    :param conn_id: the storage connection (e.g. an ``aws`` connection; ``None`` for ``file://``).
    :param allow_empty: list nothing without failing (a warning says so); by default a source that
        matches no file fails.
    :param follow_symlinks: descend into linked local folders.
    :raises FileNotFoundError: nothing exists at ``source``, or (unless ``allow_empty``) it matches no file.
    :raises ValueError: ``source`` is empty or blank (as a template left blank renders).
    """
    if not source.strip():  # fsspec would read it as the current folder
        raise ValueError(f"source {source!r} is empty: give a file, a folder or a glob (s3://b/images/)")
    root_url, pattern = _split_glob(source)
    if pattern is not None and ObjectStoragePath(source, conn_id=conn_id).exists():
        root_url, pattern = source, None  # a real name that holds glob characters
    root = ObjectStoragePath(root_url, conn_id=conn_id)
    if isinstance(root.fs, LocalFileSystem) and (not root.protocol or root.path != local_path(root.path)):
        root = ObjectStoragePath(f"file://{local_path(root.path)}")  # one name per local file, one URI per name
    if pattern is None and not root_url.endswith("/") and root.is_file():
        yield source_from_info(root, root.stat())
        return
    if not root.exists():
        if pattern is None:
            raise FileNotFoundError(f"source {source!r}: no such file or folder")
        if not allow_empty:
            raise FileNotFoundError(f"source {source!r} matched no files: {stable_uri(root)} does not exist")
        log.warning("0 images listed: source %r matched no files", source)
        return
    try:
        matcher = glob_matcher(pattern) if pattern else None
    except ValueError as err:  # "**" inside a name
        raise ValueError(f"source {source!r}: {err}") from None
    depth = None if pattern is None or "**" in pattern else pattern.count("/") + 1
    base = root.path.rstrip("/")
    real_root = os.path.realpath(base) if isinstance(root.fs, LocalFileSystem) else None
    found = 0
    for key, info in _walk(root.fs, base, depth, follow_symlinks):
        if matcher is None or matcher.match(key[len(base) :].lstrip("/")):
            found += 1
            yield source_from_info(root, info, key=key, real_root=real_root)
    if not found and allow_empty:
        log.warning("0 images listed: source %r matched no files", source)
    elif not found:
        raise FileNotFoundError(
            f"source {source!r} matched no files{' under ' + stable_uri(root) if pattern else ''}; "
            "check the path and the pattern (allow_empty=True accepts an empty source)"
        )


def _walk(fs: AbstractFileSystem, base: str, depth: int | None, follow: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, info)`` of every file below ``base``, ``depth`` levels at most."""
    if isinstance(fs, LocalFileSystem):
        yield from _walk_local(base, depth, follow)
    elif hasattr(fs, "_iterdir") and hasattr(fs, "split_path"):  # s3fs: one page of keys at a time
        yield from _walk_s3(fs, base)
    else:
        for folder, _dirs, files in fs.walk(base, maxdepth=depth, detail=True):
            for name, info in files.items():
                yield info.get("name") or f"{folder}/{name}", info


def _walk_local(base: str, depth: int | None, follow: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    folders = [(base, 1)]
    walked = {_identity(os.stat(base))}  # a linked folder walked already (a loop, a second link) is not again
    while folders:
        folder, level = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=follow):
                    identity = _identity(entry.stat())
                    if (depth is None or level < depth) and identity not in walked:
                        walked.add(identity)
                        folders.append((entry.path, level + 1))
                    continue
                try:
                    status = entry.stat()  # a link's target: what is read, and what a shard's os.stat sees
                except OSError:
                    status = None  # gone since: reading it records why
                yield entry.path, {"size": status.st_size, "mtime": status.st_mtime} if status else {}


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _walk_s3(fs: Any, base: str) -> Iterator[tuple[str, dict[str, Any]]]:
    from fsspec.asyn import sync

    bucket, key, _version = fs.split_path(base)
    pages = fs._iterdir(bucket, delimiter="", prefix=f"{key}/" if key else "")
    while True:
        try:
            info = sync(fs.loop, pages.__anext__)
        except StopAsyncIteration:
            return
        marker = info["name"].endswith("/") and not info.get("size")  # a console's empty "folder/" object
        if info.get("type") != "directory" and not marker:
            yield info["name"], info


def _split_glob(url: str) -> tuple[str, str | None]:
    """Split ``s3://b/images/**/*.jpg`` into the folder to walk and the pattern below it."""
    match = _GLOB_CHARS.search(url)
    if match is None:
        return url, None
    cut = url.rfind("/", 0, match.start())
    return url[: cut + 1], url[cut + 1 :]


def shard_images(
    source: str, shards: int, *, conn_id: str | None = None, max_images: int | None = None
) -> list[list[str]]:
    """List ``source`` once and deal its files into ``shards`` lists, for ``.expand()``.

    Each list holds storage URLs that :class:`SearchByImageOperator` takes as ``source``, with the
    same ``source_conn_id``. Shards differ in size by at most one image; empty shards are dropped.

    :param source: as in :func:`list_images`.
    :param shards: how many lists (mind ``[core] max_map_length``, 1024 by default).
    :param conn_id: the storage connection.
    :param max_images: list at most this many images.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1 (got {shards})")
    uris = [image.uri for image in itertools.islice(list_images(source, conn_id=conn_id), max_images)]
    return [uris[start::shards] for start in range(min(shards, len(uris)))]
