"""Atomic file output: everything is written under a temporary name in the same folder, then renamed.

A process killed mid-write leaves only a hidden '.<name>.partial<suffix>' file, never a half-written output.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np


def partial_path(path: Path) -> Path:
    """The temporary name used while `path` is being written (hidden, same folder, same suffix).

    The name is fixed, so a re-run after a kill overwrites a leftover instead of leaving it behind; no
    two of our processes write the same output (workers and shards own disjoint items).
    """
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()  # only our own partial file, never an input


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_csv(path: str | Path, frame, index: bool = False) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)
    return Path(path)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or single-channel) uint8 image as PNG atomically."""
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write image {path}")
    return Path(path)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8; raises OSError naming the file if it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot read image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def sha256(path: Path) -> str:
    """The file's SHA-256 as hex, read in 1 MiB blocks (recorded with the weights a run used)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
