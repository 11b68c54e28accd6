"""TensorBoard scalars and images of a training run, in <run>/tensorboard/ (the CSV logs stay the record).
tensorboard is imported only when a trainer opens its log, so nothing else (the app) ever loads it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FOLDER = "tensorboard"

# The original classifier's eight per-epoch tags (its <log_dir>/runs), and the epoch-log columns they show.
CLASSIFIER_EPOCH_TAGS = {
    "Training: loss per epoch": "train_loss", "Training: fake loss per epoch": "train_fake_loss",
    "Training: real loss per epoch": "train_real_loss", "Training: accuracy per epoch": "train_accuracy",
    "Validation: loss per epoch": "valid_loss", "Validation: fake loss per epoch": "valid_fake_loss",
    "Validation: real loss per epoch": "valid_real_loss", "Validation: accuracy per epoch": "valid_accuracy",
}


class TensorBoardLog:
    """An event file writer for one run folder (rank 0 only).

    `resume_at`: the first step (or epoch) a resumed run will log again; events the interrupted run wrote from
    there on are purged, so each step is shown once, as in the CSV logs.
    """

    def __init__(self, run_dir: str | Path, resume_at: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(str(Path(run_dir) / FOLDER), purge_step=resume_at)

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}{name}", float(value), step)

    def image(self, tag: str, png: str | Path, step: int) -> None:
        """A PNG written by the run (e.g. its sample grid), as an RGB image."""
        with Image.open(png) as image:
            self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
