"""Shrink images over the API's 3 MiB limit with Pillow (the ``pillow`` extra)."""

from __future__ import annotations

import io

from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES

#: Refuse images with more pixels than this (decompression bombs).
MAX_PIXELS = 100_000_000


def downscale_to_limit(data: bytes, *, name: str, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """Re-encode ``data`` as a JPEG no larger than ``limit`` bytes, shrinking it as needed.

    :raises InvalidImageError: Pillow is missing, or the image cannot be decoded or is too large.
    """
    try:
        from PIL import Image
    except ImportError:
        raise InvalidImageError(
            f"{name}: over 3 MiB and Pillow is not installed: pip install 'airflow-provider-searchapi[pillow]'"
        ) from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InvalidImageError(f"{name}: {width}x{height} pixels is more than {MAX_PIXELS:,}; not decoded")
            image = image.convert("RGB")
            scale = 1.0
            while True:
                size = (max(1, int(width * scale)), max(1, int(height * scale)))
                buffer = io.BytesIO()
                image.resize(size).save(buffer, "JPEG", quality=88)
                if buffer.tell() <= limit:
                    return buffer.getvalue()
                scale *= 0.7
    except InvalidImageError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad image
        raise InvalidImageError(f"{name}: cannot be decoded for downscaling ({type(err).__name__})") from None
