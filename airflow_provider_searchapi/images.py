"""Cheap checks of image bytes before a request is spent on them."""

from __future__ import annotations

from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES

_SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("jpeg", b"\xff\xd8\xff", 0),
    ("png", b"\x89PNG\r\n\x1a\n", 0),
    ("gif", b"GIF87a", 0),
    ("gif", b"GIF89a", 0),
    ("bmp", b"BM", 0),
    ("webp", b"WEBP", 8),
)

SUPPORTED_FORMATS = ("jpeg", "png", "gif", "webp", "bmp")


def sniff_format(data: bytes) -> str | None:
    """Return ``jpeg``, ``png``, ``gif``, ``webp`` or ``bmp`` from the magic bytes, or ``None``."""
    for name, magic, offset in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if name == "webp" and data[:4] != b"RIFF":
                continue
            return name
    return None


def check_image(data: bytes, *, name: str = "image") -> str:
    """Return the image's format, or raise :class:`InvalidImageError` saying what is wrong with it.

    :param data: the image bytes.
    :param name: what to call the image in the error (a file name or URI).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"{name}: image must be bytes, got {type(data).__name__}")
    size = len(data)
    if size == 0:
        raise InvalidImageError(f"{name}: the file is empty (0 bytes)")
    if size > MAX_IMAGE_BYTES:
        raise InvalidImageError(
            f"{name}: {size:,} bytes is over the API's limit of {MAX_IMAGE_BYTES:,} bytes (3 MiB); "
            "downscale it first (SearchByImageOperator(downscale_oversized=True) does so with Pillow)"
        )
    kind = sniff_format(bytes(data[:16]))
    if kind is None:
        raise InvalidImageError(
            f"{name}: not a JPEG, PNG, GIF, WebP or BMP image (first bytes {bytes(data[:8]).hex()})"
        )
    return kind
