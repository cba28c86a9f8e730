"""Where the images come from: object-storage listings (streamed), explicit paths, or public URLs.

A source's *URI* is its stable name in every record: ``<protocol>://<path>`` without the connection id
that ``str(ObjectStoragePath)`` carries (``s3://bucket/images/cat.jpg``, ``file:///data/cat.jpg``), or
the image URL itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from airflow.sdk import ObjectStoragePath
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem, make_path_posix

from airflow_provider_searchapi.engine.downscale import downscale_to_limit
from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.images import MAX_DECODE_BYTES
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES

#: The surrogates that stand for the bytes of a local name that are not UTF-8.
_UNDECODED = re.compile("[\udc80-\udcff]")


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
    :param real_root: a local listing's folder with its links resolved (once per listing, not per
        file); when not given, ``root`` is resolved when the file is read.
    """

    uri: str
    root: ObjectStoragePath | None = None
    key: str | None = None
    size: int | None = None
    etag: str | None = None
    mtime: str | None = None
    real_root: str | None = None

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
    return _uri(path.protocol, path.path)


def _uri(protocol: str, path: str) -> str:
    """``<protocol>://<path>`` (a bare local path is a ``file://`` one) as text that any output can store:
    the bytes of a local name that is not valid UTF-8 (which Python carries as surrogates) are
    percent-encoded, ``caf\\xe9.jpg`` → ``caf%E9.jpg``."""
    text = _UNDECODED.sub(lambda match: f"%{ord(match[0]) - 0xDC00:02X}", path)
    return f"{protocol or 'file'}://{text}"


def local_path(path: str) -> str:
    """A local path as fsspec makes it (absolute, ``~`` expanded), without repeated slashes and ``.``
    segments, so that each file has one name (``..`` is left to the system: it resolves it through links)."""
    parts = [part for part in make_path_posix(path).split("/") if part not in ("", ".")]
    return "/" + "/".join(parts)


def _listed_name(path: str) -> str:
    """The local file a listed URI names: a name that is not UTF-8 comes percent-encoded (``_uri``),
    decoded here when the path as written does not exist."""
    if "%" not in path or os.path.lexists(path):
        return path
    return os.fsdecode(unquote_to_bytes(path))


def _mtime(info: dict[str, Any]) -> str | None:
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    return str(value) if value else None


def source_from_info(
    root: ObjectStoragePath, info: dict[str, Any], *, key: str | None = None, real_root: str | None = None
) -> SourceImage:
    """The source of a file as a listing describes it (``info``: fsspec's, or ``os.stat``'s size/mtime)."""
    size, etag = info.get("size", info.get("Size")), info.get("ETag") or info.get("etag")
    return SourceImage(
        uri=_uri(root.protocol, key or root.path),
        root=root,
        key=key,
        size=int(size) if size is not None else None,
        etag=str(etag).strip('"') if etag else None,
        mtime=_mtime(info),
        real_root=real_root,
    )


def images_from_paths(paths: Iterable[str], *, conn_id: str | None = None) -> Iterator[SourceImage]:
    """Sources for explicit paths (what a mapped shard receives); nothing is listed.

    Like a listing, it makes one ``ObjectStoragePath`` per store (one per file costs more than reading
    a small file) and looks local files up for their size and time.

    :param paths: storage URLs (``s3://bucket/images/cat.jpg``, ``file:///data/cat.jpg``).
    :param conn_id: the storage connection of every path.
    """
    roots: dict[str | None, ObjectStoragePath | None] = {}
    for url in dict.fromkeys(paths):  # the same path twice is searched once
        scheme, netloc = urlsplit(url)[:2]
        # a store's root, unless the URL is a bare path or has an upper-case scheme (fsspec keeps those)
        store = f"{scheme}://{netloc}/" if url.startswith(f"{scheme}://") else None
        if store is not None and store not in roots:
            roots[store] = None  # a store with no root of its own (memory://dir/)
            with contextlib.suppress(Exception):
                roots[store] = ObjectStoragePath(store, conn_id=conn_id)
        if (root := roots.get(store)) is None:  # a path object for this file, as ObjectStoragePath makes it
            path = ObjectStoragePath(url, conn_id=conn_id)
            yield SourceImage(uri=stable_uri(path), root=path)
            continue
        fs = root.fs
        key = fs._strip_protocol(url)  # what ObjectStoragePath(url).path is
        info: dict[str, Any] = {}
        if isinstance(fs, LocalFileSystem):
            key = _listed_name(local_path(key))
            with contextlib.suppress(OSError):  # a missing file is left to the read, which records why
                status = os.stat(key)
                info = {"size": status.st_size, "mtime": status.st_mtime}
        yield source_from_info(root, info, key=key)


def read_image(source: SourceImage, *, downscale: bool = False, follow_symlinks: bool = False) -> tuple[bytes, int]:
    """A stored image's bytes (over 3 MiB: downscaled when asked, else refused) and its size as stored.

    A local file must be a regular file (a pipe is never opened), inside the folder it was listed
    under unless ``follow_symlinks``. Blocking: call it in a worker thread.
    """
    limit = MAX_DECODE_BYTES if downscale else MAX_IMAGE_BYTES
    if source.size is not None and source.size > limit:
        raise InvalidImageError(f"{source.uri}: {source.size:,} bytes is over the limit of {limit:,} bytes; not read")
    # Through the filesystem itself: ObjectStoragePath.open would record every image read as an input
    # Asset for lineage; the task's outlet is what it produces.
    fs, key = source.location
    if isinstance(fs, LocalFileSystem):
        if not stat.S_ISREG(os.stat(key).st_mode):
            raise InvalidImageError(f"{source.uri}: not a regular file (a folder, pipe, socket or device); not read")
        if not follow_symlinks:
            real_root = source.real_root or os.path.realpath(source.root.path)
            if os.path.commonpath([os.path.realpath(key), real_root]) != real_root:
                raise InvalidImageError(f"{source.uri}: a link to a file outside the source folder; not read")
    with fs.open(key, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise InvalidImageError(f"{source.uri}: over the limit of {limit:,} bytes; not read")
    size = len(data)
    if downscale and size > MAX_IMAGE_BYTES:
        data = downscale_to_limit(data, name=source.uri)
    return data, size


def images_from_urls(urls: Iterable[str]) -> Iterator[SourceImage]:
    """Sources for public image URLs, sent to the API as ``url`` (nothing is downloaded); each once.
    A NUL character, which no URL holds as such and PostgreSQL's text refuses, is sent as ``%00``."""
    for url in dict.fromkeys(url.replace("\x00", "%00") for url in urls):
        yield SourceImage(uri=url)
