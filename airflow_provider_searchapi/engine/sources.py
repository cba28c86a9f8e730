"""Where the images come from: object-storage listings (streamed), explicit paths, or public URLs.

A source's *URI* is its stable name in every record: ``<protocol>://<path>`` without the connection id
that ``str(ObjectStoragePath)`` carries (``s3://bucket/images/cat.jpg``, ``file:///data/cat.jpg``), or
the image URL itself.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import ObjectStoragePath
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_searchapi.engine.downscale import downscale_to_limit
from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES

#: Largest object read for downscaling; anything larger is refused unread.
MAX_READ_BYTES_FOR_DOWNSCALE = 64 * 1024 * 1024
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class SourceImage:
    """One image to search.

    :param uri: its stable name (see the module's docstring).
    :param root: the storage path it was listed under, or the image's own path; ``None`` for a public
        URL that is sent as is.
    :param key: the image's path within ``root``'s filesystem (``root.path`` when not given).
    :param size: size in bytes, when the listing told.
    :param etag: the store's ETag, when it has one.
    :param mtime: last modification time (ISO 8601, UTC), when known.
    """

    uri: str
    root: ObjectStoragePath | None = None
    key: str | None = None
    size: int | None = None
    etag: str | None = None
    mtime: str | None = None

    @property
    def is_url(self) -> bool:
        return self.root is None

    @property
    def location(self) -> tuple[AbstractFileSystem, str]:
        """The filesystem and the path in it to read the image from: all that reading needs."""
        assert self.root is not None, "a URL source has nothing to read"
        return self.root.fs, self.key or self.root.path

    @cached_property
    def path(self) -> ObjectStoragePath | None:
        """The image's storage path, made on first use: building one per listed file would cost more
        than reading the file (``None`` for a URL)."""
        if self.root is None or self.key is None:
            return self.root
        return self.root / self.key[len(self.root.path.rstrip("/")) :].lstrip("/")


def stable_uri(path: ObjectStoragePath) -> str:
    """``<protocol>://<path>`` of a storage path, without its connection id."""
    return f"{path.protocol}://{path.path}"


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob relative to its root: ``**`` spans folders, ``*`` and ``?`` stay in one."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _split_glob(url: str) -> tuple[str, str | None]:
    """Split ``s3://b/images/**/*.jpg`` into the folder to walk and the pattern below it."""
    match = _GLOB_CHARS.search(url)
    if match is None:
        return url, None
    cut = url.rfind("/", 0, match.start())
    return url[: cut + 1], url[cut + 1 :]


def _mtime(info: dict[str, Any]) -> str | None:
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    return str(value) if value else None


def _etag(info: dict[str, Any]) -> str | None:
    value = info.get("ETag") or info.get("etag")
    return str(value).strip('"') if value else None


def list_images(source: str, *, conn_id: str | None = None) -> Iterator[SourceImage]:
    """Stream the files under an object-storage URL, folder by folder, in a stable order.

    :param source: a file (``s3://b/cat.jpg``), a folder (``s3://b/images/``: every file below it) or
        a glob (``s3://b/images/**/*.jpg``).
    :param conn_id: the storage connection (e.g. an ``aws`` connection; ``None`` for ``file://``).
    :raises FileNotFoundError: nothing exists at a non-glob ``source``.
    """
    root_url, pattern = _split_glob(source)
    root = ObjectStoragePath(root_url, conn_id=conn_id)
    if pattern is None and not root_url.endswith("/") and root.is_file():
        info = root.stat()
        yield _source(root, info)
        return
    if pattern is None and not root.exists():
        raise FileNotFoundError(f"source {source!r}: no such file or folder")
    matcher = _glob_regex(pattern) if pattern else None
    fs, base = root.fs, root.path.rstrip("/")
    for folder, _dirs, files in fs.walk(base, detail=True):
        for name in sorted(files):
            info = files[name]
            full = info.get("name") or f"{folder}/{name}"
            if matcher is not None and not matcher.match(full[len(base) :].lstrip("/")):
                continue
            yield _source(root, info, key=full)


def _source(root: ObjectStoragePath, info: dict[str, Any], *, key: str | None = None) -> SourceImage:
    size = info.get("size", info.get("Size"))
    return SourceImage(
        uri=f"{root.protocol}://{key}" if key else stable_uri(root),
        root=root,
        key=key,
        size=int(size) if size is not None else None,
        etag=_etag(info),
        mtime=_mtime(info),
    )


def images_from_paths(paths: Iterable[str], *, conn_id: str | None = None) -> Iterator[SourceImage]:
    """Sources for explicit paths (what a mapped shard receives); nothing is listed.

    Like a listing, it makes one ``ObjectStoragePath`` per store (``s3://bucket/``, ``file:///``) and
    names each file by its key in that store's filesystem, as the filesystem itself parses it: a path
    object per file cost more than reading a small file. Local files are looked up (``os.stat``) for
    their size and time, as a listing gives them, so that small ones are read as cheaply as listed ones.

    :param paths: storage URLs (``s3://bucket/images/cat.jpg``, ``file:///data/cat.jpg``).
    :param conn_id: the storage connection of every path.
    """
    roots: dict[str, ObjectStoragePath | None] = {}
    for url in paths:
        scheme, netloc = urlsplit(url)[:2]
        root = None
        if url.startswith(f"{scheme}://"):  # not a bare path, nor an upper-case scheme (fsspec keeps those)
            store = f"{scheme}://{netloc}/"
            if store not in roots:
                roots[store] = _store_root(store, conn_id)
            root = roots[store]
        if root is None:  # a path object for this file, as ObjectStoragePath makes it
            path = ObjectStoragePath(url, conn_id=conn_id)
            yield SourceImage(uri=stable_uri(path), root=path)
            continue
        fs = root.fs
        key = fs._strip_protocol(url)  # what ObjectStoragePath(url).path is
        info: dict[str, Any] = {}
        if isinstance(fs, LocalFileSystem):
            try:
                status = os.stat(key)
            except OSError:
                pass  # reading it will fail, and record why
            else:
                info = {"size": status.st_size, "mtime": status.st_mtime}
        yield _source(root, info, key=key)


def read_image(source: SourceImage, *, downscale: bool = False) -> tuple[bytes, int]:
    """A stored image's bytes (over 3 MiB: downscaled when asked, else refused) and its size as stored.

    Blocking: call it in a worker thread.
    """
    limit = MAX_READ_BYTES_FOR_DOWNSCALE if downscale else MAX_IMAGE_BYTES
    if source.size is not None and source.size > limit:
        raise InvalidImageError(f"{source.uri}: {source.size:,} bytes is over the limit of {limit:,} bytes; not read")
    # Through the filesystem itself: ObjectStoragePath.open would record every image read as an input
    # Asset for lineage; the task's outlet is what it produces.
    fs, key = source.location
    if isinstance(fs, LocalFileSystem) and not stat.S_ISREG(os.stat(key).st_mode):
        raise InvalidImageError(f"{source.uri}: not a regular file (a folder, pipe, socket or device); not read")
    with fs.open(key, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise InvalidImageError(f"{source.uri}: over the limit of {limit:,} bytes; not read")
    size = len(data)
    if downscale and size > MAX_IMAGE_BYTES:
        data = downscale_to_limit(data, name=source.uri)
    return data, size


def images_from_urls(urls: Iterable[str]) -> Iterator[SourceImage]:
    """Sources for public image URLs, sent to the API as ``url`` (nothing is downloaded)."""
    for url in urls:
        yield SourceImage(uri=url)


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
    buckets: list[list[str]] = [[] for _ in range(shards)]
    for index, image in enumerate(list_images(source, conn_id=conn_id)):
        if max_images is not None and index >= max_images:
            break
        buckets[index % shards].append(image.uri)
    return [bucket for bucket in buckets if bucket]


def _store_root(store: str, conn_id: str | None) -> ObjectStoragePath | None:
    """A store's root path, or ``None`` for a store that has none of its own (``memory://dir/``)."""
    try:
        return ObjectStoragePath(store, conn_id=conn_id)
    except Exception:  # noqa: BLE001 - its files then get a path object each, as before
        return None
