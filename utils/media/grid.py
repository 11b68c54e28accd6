"""Picture grids: rows of RGB images under column titles, each row labelled in its first tile, written as one PNG
(the MRI-GAN's training samples and the comparison of generators)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from utils.fileio import write_png


def save_image_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], column_titles: Sequence[str],
                    row_labels: Sequence[str], tile: int = 128) -> Path:
    """Write a PNG of RGB uint8 images, one list per row, each tile resized to `tile` px, with a title
    band on top and a label in each row's first tile."""
    band = np.full((24, tile * len(column_titles), 3), 255, np.uint8)
    for i, title in enumerate(column_titles):
        cv2.putText(band, title, (i * tile + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    lines = [band]
    for images, label in zip(rows, row_labels):
        tiles = [cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA) for image in images]
        cv2.putText(tiles[0], label, (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
        lines.append(np.concatenate(tiles, axis=1))
    return write_png(path, np.concatenate(lines, axis=0))
