"""Shrink images over the API's 3 MiB limit with Pillow."""

from __future__ import annotations

import contextlib
import io

from PIL import ImageOps

from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.images import open_image
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES


def downscale_to_limit(data: bytes, *, name: str, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """Re-encode ``data`` as a JPEG no larger than ``limit`` bytes, shrinking it as needed.

    Images over :data:`~airflow_provider_searchapi.images.MAX_PIXELS` pixels are refused from the header,
    before anything is decoded.

    :param data: the image: JPEG, PNG, GIF, WebP or BMP.
    :param name: what to call the image in errors (a file name or URI).
    :param limit: the largest result, in bytes.
    :raises InvalidImageError: the image is not one of those formats, is too large in pixels, cannot be
        decoded, or cannot be made as small as ``limit``.
    """
    with open_image(data, name=name) as image:
        try:
            rgb = image.convert("RGB")
        except Exception as err:  # noqa: BLE001 - any decoder failure is a bad image
            raise InvalidImageError(f"{name}: cannot be decoded for downscaling ({type(err).__name__})") from None
    # Turned the way its EXIF says (the JPEG made carries no EXIF); a damaged EXIF block leaves it as stored.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(rgb, in_place=True)
    width, height = rgb.size
    scale = 1.0
    while True:
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        buffer = io.BytesIO()
        rgb.resize(size).save(buffer, "JPEG", quality=88)
        if buffer.tell() <= limit:
            return buffer.getvalue()
        if size == (1, 1):
            raise InvalidImageError(f"{name}: cannot be re-encoded in {limit:,} bytes or fewer")
        scale *= 0.7
