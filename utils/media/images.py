"""Read an image file for a model's data set: RGB, fully decoded, or one error naming the file."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from utils.errors import DataFileError


def read_image(path: str | Path, error: type[DataFileError] = DataFileError) -> Image.Image:
    """An image file as an RGB PIL image (pixels loaded, so truncation shows here); a missing or corrupt file
    raises `error` naming it, never a silent substitute (README, Differences #14)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "file not found" if isinstance(exc, FileNotFoundError) else str(exc).splitlines()[0][:120]
        raise error(f"{path}: cannot read image ({reason})") from None
