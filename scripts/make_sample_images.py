"""Draw the bundled sample images (our own work, CC0): `python scripts/make_sample_images.py`.

They are committed; this script only says how they were made.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "airflow_provider_searchapi" / "testing" / "sample_images"


def scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size)
    pixels = image.load()
    for y in range(height):
        for x in range(width):
            pixels[x, y] = (
                int(128 + 127 * math.sin((x + seed * 40) / 37.0)),
                int(128 + 127 * math.sin((y + seed * 17) / 23.0)),
                (x * y + seed * 50) % 256,
            )
    draw = ImageDraw.Draw(image)
    for i in range(3 + seed % 4):
        x0, y0 = (seed * 53 + i * 71) % (width - 60), (seed * 29 + i * 43) % (height - 60)
        color = ((seed * 90 + i * 60) % 256, (i * 120) % 256, (seed * 30) % 256)
        if i % 2:
            draw.ellipse((x0, y0, x0 + 60, y0 + 50), fill=color)
        else:
            draw.rectangle((x0, y0, x0 + 55, y0 + 45), fill=color)
    return image


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    names = [
        ("sunset.jpg", "JPEG"),
        ("harbour.jpg", "JPEG"),
        ("meadow.jpg", "JPEG"),
        ("city.jpg", "JPEG"),
        ("tiles.png", "PNG"),
        ("badge.gif", "GIF"),
        ("poster.webp", "WEBP"),
        ("sketch.bmp", "BMP"),
    ]
    for seed, (name, kind) in enumerate(names):
        size = (96, 64) if kind == "BMP" else (320, 240)
        image = scene(seed, size)
        if kind == "GIF":
            image = image.convert("P", palette=Image.ADAPTIVE)
        image.save(OUT / name, kind, **({"quality": 85} if kind in ("JPEG", "WEBP") else {}))


if __name__ == "__main__":
    main()
