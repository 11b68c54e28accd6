"""Helpers only the tests use: shorthand wrappers around the library, and broken media files."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch import Tensor, nn

from utils.checkpoint import load_state, read_checkpoint
from utils.media.video import VideoReader
from utils.train.classifier_data import balanced_bce_parts


def load_checkpoint(path: str | Path, model: nn.Module | None = None, key: str | None = None) -> Any:
    """Read `path` safely; when `model` is given, load its weights (from `key`, or the one known key).

    Returns the whole checkpoint (usually a dict) so callers can read optimizer state, epoch, etc.
    """
    checkpoint = read_checkpoint(path)
    if model is not None:
        load_state(model, checkpoint, key, source=path)
    return checkpoint


def sampled_frames(path: str | Path, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """Shorthand: open `path` and yield (frame_index, RGB frame) for every `step`-th frame."""
    with VideoReader(path) as reader:
        yield from reader.frames(step)


def balanced_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """The classifier's training loss: the mean of the fake-class and real-class BCE (classes present)."""
    return balanced_bce_parts(logits, targets)[0]


def make_broken_files(folder: str | Path, good_video: str | Path) -> dict[str, Path]:
    """Files that must be rejected cleanly: empty, truncated (half of `good_video`), text named .mp4."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(good_video).read_bytes()
    files = {
        "empty": folder / "empty.mp4",
        "truncated": folder / "truncated.mp4",
        "text": folder / "text.mp4",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"].write_text("this is not a video\n" * 20, encoding="utf-8")
    return files
