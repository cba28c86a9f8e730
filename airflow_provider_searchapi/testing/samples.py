"""The sample images bundled with the provider (drawn by us, CC0; see scripts/make_sample_images.py)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_images"


def sample_images() -> list[Path]:
    """Paths of the bundled sample images, sorted by name."""
    return sorted(p for p in SAMPLE_DIR.iterdir() if p.is_file())
