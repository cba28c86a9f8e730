"""Checks of image bytes before a request is spent on them: Pillow reads the header, never the pixels."""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES

#: Images of more pixels are refused undecoded: a few KiB can declare a "decompression bomb" of
#: gigapixels. It is Pillow's default ``Image.MAX_IMAGE_PIXELS``, so Pillow's own guard (a warning
#: above it, an error above twice it) never lets through what this check refuses.
MAX_PIXELS = 89_478_485
#: Largest file read only to be decoded and shrunk (downscaling, the report's thumbnails); anything
#: larger is left unread.
MAX_DECODE_BYTES = 64 * 1024 * 1024

#: Pillow's names of the formats the API accepts, and ours.
_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
_DISPLAY = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WebP", "bmp": "BMP"}
_ACCEPTED = "a JPEG, PNG, GIF, WebP or BMP image"

#: Leading bytes of the accepted formats (but WebP: ``RIFF``, 4 bytes of size, ``WEBP``).
_SIGNATURES = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif", b"GIF89a": "gif", b"BM": "bmp"}

#: Leading bytes of common files the API does not take, to say what a refused file is.
_OTHER_SIGNATURES = {
    b"%PDF-": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (or an office document, which is one)",
    b"\x1f\x8b": "a gzip archive",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
}


def sniff_format(data: bytes) -> str | None:
    """Return ``jpeg``, ``png``, ``gif``, ``webp`` or ``bmp`` from the leading bytes, or ``None``."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((kind for magic, kind in _SIGNATURES.items() if data.startswith(magic)), None)


def _describe(sample: bytes) -> str:
    """What kind of file ``sample`` (its first bytes) looks like: "a PDF document", "a text file" …"""
    for magic, kind in _OTHER_SIGNATURES.items():
        if sample.startswith(magic):
            return kind
    if sample[4:8] == b"ftyp":
        return "an ISO media file (HEIC or AVIF image, MP4 or MOV video)"
    try:  # incremental: a character cut at the end of the sample is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(sample).removeprefix("\ufeff")
    except UnicodeDecodeError:
        return "unknown binary data"
    if not all(char.isprintable() or char in "\t\n\r\f\v" for char in text):
        return "unknown binary data"
    head = text.lstrip().lower()
    if head.startswith("<!doctype html") or "<html" in head[:1024]:
        return "an HTML page"
    if "<svg" in head[:1024]:
        return "an SVG drawing"
    if head.startswith("<?xml"):
        return "an XML document"
    return "a text file"


def _unreadable(data: bytes, name: str) -> InvalidImageError:
    """The error for bytes Pillow cannot open: it names their kind, never quotes them."""
    sample = bytes(data[:4096])
    kind = sniff_format(sample)
    if kind is not None:
        return InvalidImageError(f"{name}: a {_DISPLAY[kind]} image whose header cannot be read (damaged or cut short)")
    return InvalidImageError(f"{name}: not {_ACCEPTED}; it looks like {_describe(sample)}")


@contextmanager
def open_image(data: bytes, *, name: str) -> Iterator[Image.Image]:
    """Open ``data`` with Pillow lazily: the header (format, size) is read, the pixels only when asked for.
    Pillow's own ``Image.MAX_IMAGE_PIXELS`` guard applies too, as the process has it set.

    :param data: the image bytes.
    :param name: what to call the image in errors (a file name or URI).
    :raises InvalidImageError: not a format the API accepts, a damaged header, or more than
        :data:`MAX_PIXELS` pixels.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=tuple(_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        reason = str(err).rstrip(".")
        raise InvalidImageError(f"{name}: refused by Pillow's decompression bomb guard ({reason})") from None
    except Exception:  # noqa: BLE001 - whatever Pillow cannot open is not an image to send
        raise _unreadable(data, name) from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise InvalidImageError(
                f"{name}: {width}x{height} pixels is more than {MAX_PIXELS:,}; refused as a possible decompression bomb"
            )
        yield image


def check_image(data: bytes, *, name: str = "image") -> str:
    """Return the image's format (``jpeg``, ``png``, ``gif``, ``webp`` or ``bmp``), or raise
    :class:`InvalidImageError` saying what is wrong with it. Only the header is read.

    :param data: the image bytes.
    :param name: what to call the image in the error (a file name or URI).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"{name}: image must be bytes, got {type(data).__name__}")
    if not data:
        raise InvalidImageError(f"{name}: the file is empty (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImageError(
            f"{name}: {len(data):,} bytes is over the API's limit of {MAX_IMAGE_BYTES:,} bytes (3 MiB); "
            "downscale it first (SearchByImageOperator(downscale_oversized=True) does so)"
        )
    with open_image(data, name=name) as image:
        return "jpeg" if image.format == "MPO" else _FORMATS[image.format]  # an MPO: a JPEG with more frames
