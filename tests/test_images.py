"""Image checks before sending, and downscaling: formats, kinds of non-images, bombs."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from airflow_provider_searchapi.engine.downscale import downscale_to_limit
from airflow_provider_searchapi.exceptions import InvalidImageError
from airflow_provider_searchapi.images import MAX_PIXELS, check_image
from airflow_provider_searchapi.models import MAX_IMAGE_BYTES
from tests.conftest import make_jpeg

SAMPLES = Path(__file__).parents[1] / "airflow_provider_searchapi" / "testing" / "sample_images"


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height``; its few pixel bytes do not match."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def noise(fmt: str, side: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("sample", "kind"),
    [
        ("city.jpg", "jpeg"),
        ("tiles.png", "png"),
        ("badge.gif", "gif"),
        ("poster.webp", "webp"),
        ("sketch.bmp", "bmp"),
    ],
)
def test_the_formats_the_api_accepts(sample, kind):
    assert check_image((SAMPLES / sample).read_bytes(), name=sample) == kind


def test_pixels_are_not_decoded():
    jpeg = make_jpeg(1)
    cut_in_the_pixels = jpeg[:-20]  # header intact: the API, not the check, finds it cannot be decoded
    assert check_image(cut_in_the_pixels) == "jpeg"
    assert check_image(bytearray(jpeg)) == check_image(memoryview(jpeg)) == "jpeg"


SECRET = b"s3cr3tPW"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"db_password=" + SECRET + b"\n", "it looks like a text file"),
        ("пароль: ".encode() + SECRET, "it looks like a text file"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + SECRET, "it looks like a PDF document"),
        (b"PK\x03\x04\x14\x00" + SECRET, "it looks like a ZIP archive"),
        (b"\n  <!DOCTYPE html><html><body>" + SECRET, "it looks like an HTML page"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg">' + SECRET, "it looks like an SVG drawing"),
        (b"<?xml version='1.0'?><Error><Code>AccessDenied</Code>" + SECRET, "it looks like an XML document"),
        (b"II*\x00\x08\x00\x00\x00" + SECRET, "it looks like a TIFF image"),
        (b"\x00\x00\x00\x18ftypheic" + SECRET, "HEIC or AVIF image"),
        (bytes(range(32)) + SECRET, "it looks like unknown binary data"),
        (b"\xff\xd8\xff\xe0" + SECRET, "a JPEG image whose header cannot be read"),
        (make_jpeg(1)[:300], "a JPEG image whose header cannot be read"),
        (png_declaring(0, 10), "a PNG image whose header cannot be read"),
    ],
)
def test_what_is_not_an_image_is_named_by_kind_never_by_its_bytes(data, kind):
    with pytest.raises(InvalidImageError) as caught:
        check_image(data, name="s3://bucket/notes.jpg")
    message = str(caught.value)
    assert message.startswith("s3://bucket/notes.jpg: ") and kind in message
    if not message.startswith("s3://bucket/notes.jpg: a "):
        assert "not a JPEG, PNG, GIF, WebP or BMP image" in message
    for leaked in (SECRET.decode(), SECRET.hex(), data[:8].hex(), repr(data[:8])):
        assert leaked not in message


def test_empty_and_oversized_files():
    with pytest.raises(InvalidImageError, match="a.jpg: the file is empty"):
        check_image(b"", name="a.jpg")
    with pytest.raises(InvalidImageError, match="b.jpg: 3,145,729 bytes is over the API's limit"):
        check_image(make_jpeg(1) + b"\0" * (MAX_IMAGE_BYTES + 1 - len(make_jpeg(1))), name="b.jpg")
    with pytest.raises(InvalidImageError, match="c.jpg: image must be bytes, got str"):
        check_image("not bytes", name="c.jpg")  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [png_declaring(100_000, 100_000), png_declaring(MAX_PIXELS // 9_000 + 1, 9_000)])
def test_decompression_bombs_are_refused_from_the_header(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's own, above its limit
        with pytest.raises(InvalidImageError, match="bomb.png: .*decompression bomb"):
            check_image(data, name="bomb.png")
    assert check_image(png_declaring(MAX_PIXELS // 9_000, 9_000)) == "png"  # at the bound


def test_pillow_warnings_turned_errors_still_read_as_bombs():
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InvalidImageError, match="decompression bomb"):
            check_image(png_declaring(MAX_PIXELS // 9_000 + 1, 9_000), name="bomb.png")


def test_a_lower_pillow_limit_set_by_the_process_applies(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        check_image(png_declaring(64, 48), name="small.png")


def test_downscale_fits_the_limit_and_stays_a_valid_image():
    data = noise("PNG", 1200)
    assert len(data) > MAX_IMAGE_BYTES
    shrunk = downscale_to_limit(data, name="big.png")
    assert len(shrunk) <= MAX_IMAGE_BYTES and check_image(shrunk) == "jpeg"
    small = downscale_to_limit(data, name="big.png", limit=50_000)
    assert len(small) <= 50_000
    with Image.open(io.BytesIO(small)) as image:
        assert image.width == image.height and image.width < 1200


def test_downscale_keeps_a_photo_the_way_up_its_exif_orientation_says():
    """A camera JPEG stored landscape, tagged "rotate 90°" (EXIF Orientation 6), is a portrait: so is
    what is sent for it (the re-encoded JPEG had the pixels as stored and no tag: sent on its side)."""
    photo = Image.frombytes("RGB", (300, 200), os.urandom(300 * 200 * 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95, exif=exif)
    shrunk = downscale_to_limit(buffer.getvalue(), name="phone.jpg", limit=buffer.tell() // 2)
    with Image.open(io.BytesIO(shrunk)) as image:
        width, height = ImageOps.exif_transpose(image).size
    assert height > width
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95, exif=b"Exif\x00\x00not a TIFF block")  # damaged: pixels as stored
    assert downscale_to_limit(buffer.getvalue(), name="odd.jpg", limit=buffer.tell() // 2)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (png_declaring(100_000, 100_000), "decompression bomb"),
        (b"not an image at all", "it looks like a text file"),
        (make_jpeg(1)[:-20], "cannot be decoded for downscaling"),
    ],
)
def test_downscale_refuses_what_it_cannot_decode(data, words):
    with pytest.raises(InvalidImageError, match=words):
        downscale_to_limit(data, name="x.jpg")


def test_downscale_gives_up_below_a_one_pixel_jpeg():
    with pytest.raises(InvalidImageError, match="cannot be re-encoded in 100 bytes or fewer"):
        downscale_to_limit(make_jpeg(1), name="x.jpg", limit=100)
