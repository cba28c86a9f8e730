"""Cheap checks of image bytes before a request is spent on them."""

from __future__ import annotations

import struct

from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES

#: Images claiming more pixels than this are refused unsent: a few KiB can declare a "decompression
#: bomb" of gigapixels. Real photos stay far below (a 48 MP camera is 0.48 of it).
MAX_PIXELS = 100_000_000

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


def image_dimensions(data: bytes, kind: str) -> tuple[int, int] | None:
    """Width and height from the header alone (no decoding); ``None`` when the header is cut short."""
    try:
        if kind == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if kind == "gif":
            return struct.unpack("<HH", data[6:10])
        if kind == "bmp":
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if kind == "webp":
            return _webp_dimensions(data)
        if kind == "jpeg":
            return _jpeg_dimensions(data)
    except struct.error:
        return None
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC)."""
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            index += 2
            continue
        length = struct.unpack(">H", data[index + 2 : index + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        index += 2 + length
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
    dimensions = image_dimensions(bytes(data[:65536]), kind)
    if dimensions is not None:
        width, height = dimensions
        if width == 0 or height == 0:
            raise InvalidImageError(f"{name}: the {kind.upper()} header declares a {width}x{height} image")
        if width * height > MAX_PIXELS:
            raise InvalidImageError(
                f"{name}: the {kind.upper()} header declares {width}x{height} pixels, more than {MAX_PIXELS:,} "
                "(a decompression bomb?); not sent"
            )
    return kind
