"""Read an image file for a model's data set: RGB, fully decoded, or one error naming the file."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from utils.errors import DataFileError
from utils.fileio import intermediate_error


def read_image(path: str | Path, error: type[DataFileError] = DataFileError,
               rebuilt_by: str | None = None) -> Image.Image:
    """An image file as an RGB PIL image (pixels loaded, so truncation shows here); a missing or corrupt file
    raises `error` naming it, never a silent substitute (docs/differences.md#classifier-training-fixes). With
    `rebuilt_by` (the data_preprocess.py flag that wrote the image) the message says it is corrupt and which step
    rebuilds it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "file not found" if isinstance(exc, FileNotFoundError) else str(exc).splitlines()[0][:120]
        if rebuilt_by is not None:
            raise error(str(intermediate_error(path, rebuilt_by, f"cannot read image: {reason}"))) from None
        raise error(f"{path}: cannot read image ({reason})") from None
