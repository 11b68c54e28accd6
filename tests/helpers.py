"""Helpers only the tests use: shorthand wrappers around the library, broken media files, and real faults for
child processes (preexec_fn): a file-size limit, and a root that obeys permission bits."""
from __future__ import annotations

import ctypes
import os
import resource
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


def file_size_limit(max_bytes: int):
    """preexec_fn: no file may grow beyond `max_bytes` (writes fail with EFBIG, as on a full quota)."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def without_root_override() -> None:
    """preexec_fn: root reads and writes whatever the permission bits say. Drop the two capabilities that let
    it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the child's bounding set, so the kernel refuses it as it
    refuses anyone else; a no-op for other users."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
