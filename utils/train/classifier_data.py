"""Classifier data: the splits (frame-label and per-video CSVs), the face/MRI image dataset and its loader and
transforms, the balanced loss. The original's, without its bugs in augmentation, loss, accuracy, bad files and
subsets (docs/differences.md#classifier-training-fixes and docs/differences.md#seeded-subsets)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from utils.config import Config
from utils.datasets import frame_label_csvs, frame_label_keys
from utils.errors import ConfigError, DataFileError, FrameReadError
from utils.fileio import read_csv_intermediate
from utils.infer.transforms import eval_steps
from utils.media.images import read_image
from utils.train.distributed import DistContext
from utils.train.loaders import make_loader
from utils.train.rng import derive_seed, seeded_cpu_generators

FRAME_LABEL_COLUMNS = ("video_id", "frame", "label")
TRANSFORMS = ("eval", "simple", "complex")


def read_frame_labels(csv_path: str | Path) -> pd.DataFrame:
    """A frame-label CSV (columns video_id, frame, label; the original's format) as a DataFrame with
    string ids and file names and integer 0/1 labels (1 = fake)."""
    csv_path = Path(csv_path)
    table = read_csv_intermediate(csv_path, "--gen_deepfake_metadata", dtype={"video_id": str, "frame": str})
    missing = [c for c in FRAME_LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise DataFileError(f"{csv_path}: missing column(s) {missing}; expected {list(FRAME_LABEL_COLUMNS)}")
    if not table["label"].isin([0, 1]).all():
        raise DataFileError(f"{csv_path}: labels must be 0 (real) or 1 (fake)")
    return table[list(FRAME_LABEL_COLUMNS)].astype({"label": int}).reset_index(drop=True)


def subset_videos(table: pd.DataFrame, size: float, seed: int) -> pd.DataFrame:
    """Keep a seeded random share `size` of the VIDEOS of each label (stratified; at least one video
    per label present), with all their frames. size >= 1 keeps everything. The original kept the
    first rows instead (docs/differences.md#seeded-subsets)."""
    if size >= 1:
        return table
    rng = np.random.default_rng(seed)
    video_labels = table.groupby("video_id", sort=True)["label"].first()
    kept = []
    for label in sorted(video_labels.unique()):
        ids = video_labels.index[video_labels == label].to_numpy()  # sorted: same pick on any filesystem
        count = max(1, int(round(size * len(ids))))
        kept.extend(rng.choice(ids, size=count, replace=False))
    return table[table["video_id"].isin(kept)].reset_index(drop=True)


class RandomBoxBlur:
    """PIL BoxBlur with a radius drawn per call from `radii` (as the original)."""

    def __init__(self, radii=(1, 2, 3)):
        self.radii = tuple(radii)

    def __call__(self, image: Image.Image) -> Image.Image:
        radius = self.radii[int(torch.randint(len(self.radii), ()))]
        return image.filter(ImageFilter.BoxBlur(radius))


class RandomStrengthJitter:
    """Brightness or contrast jitter whose strength s ~ U(0, 1) is drawn per call, then the factor
    ~ U(1 - s, 1 + s). The original drew s once at start-up, fixing it for the whole run
    (docs/differences.md#classifier-training-fixes)."""

    def __init__(self, kind: str):
        self.adjust = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast}[kind]

    def __call__(self, image: Image.Image) -> Image.Image:
        strength = float(torch.rand(()))
        factor = 1.0 + strength * (2.0 * float(torch.rand(())) - 1.0)
        return self.adjust(image, factor)


def build_transform(kind: str, size: int = 224) -> T.Compose:
    """PIL RGB image -> normalised (3, size, size) tensor.

    eval:    resize (size, size) bilinear, to tensor, ImageNet normalise.
    simple:  eval, then RandomErasing(p=0.3) at torchvision defaults.
    complex: one of {random size crop (zero padding only when the image is smaller), contrast
             jitter, box blur}, then one of {h-flip p=0.3, grayscale p=0.05, brightness jitter,
             rotation +-30 deg}, then simple. Jitter strengths are drawn per image.
    """
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform {kind!r}; choose from {', '.join(TRANSFORMS)}")
    steps = eval_steps(size)
    if kind in ("simple", "complex"):
        steps.append(T.RandomErasing(p=0.3))
    if kind == "complex":
        # The original passed 224 as RandomCrop's padding, so crops were mostly black border
        # (docs/differences.md#classifier-training-fixes).
        steps[:0] = [
            T.RandomChoice([T.RandomCrop(size, pad_if_needed=True), RandomStrengthJitter("contrast"),
                            RandomBoxBlur()]),
            T.RandomChoice([T.RandomHorizontalFlip(0.3), T.RandomGrayscale(0.05),
                            RandomStrengthJitter("brightness"), T.RandomRotation(30)]),
        ]
    return T.Compose(steps)


class FrameDataset(Dataset):
    """Face (or MRI) images named by a frame-label table: the image is <root>/<video_id>/<frame>.

    Item: {"image": transformed tensor, "label": float tensor, "video_id": str, "frame": str}.
    With label_smoothing s > 0 the label is clipped into [s, 1 - s] (real 0 -> s, fake 1 -> 1 - s),
    the original's train-mode smoothing; use s = 0 for validation and test. `rebuilt_by` names the
    data_preprocess.py flag that wrote the images, for the message about a corrupt one.

    With `augment_seed`, the random transform of item i draws from its own generator state, seeded by
    (augment_seed, i), so an image's augmentation does not depend on which loader worker reads it or on the
    items read before it: a run resumed in the middle of an epoch, whose workers start over at another batch,
    augments the remaining images as the uninterrupted run did.
    """

    def __init__(self, table: pd.DataFrame, root: str | Path, transform, label_smoothing: float = 0.0,
                 rebuilt_by: str | None = None, augment_seed: int | None = None):
        self.table = table.reset_index(drop=True)
        self.root = Path(root)
        self.transform = transform
        self.label_smoothing = label_smoothing
        self.rebuilt_by = rebuilt_by
        self.augment_seed = augment_seed

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        row = self.table.iloc[index]
        video_id, frame = str(row["video_id"]), str(row["frame"])
        s = self.label_smoothing
        label = min(max(float(row["label"]), s), 1.0 - s)
        image = read_image(self.root / video_id / frame, FrameReadError, self.rebuilt_by)
        if self.augment_seed is None:
            image = self.transform(image)
        else:
            with seeded_cpu_generators(derive_seed(self.augment_seed, index)):
                image = self.transform(image)
        return {
            "image": image,
            "label": torch.tensor(label, dtype=torch.float32),
            "video_id": video_id,
            "frame": frame,
        }


def balanced_bce_parts(logits: Tensor, targets: Tensor) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """(loss, fake_loss, real_loss): BCE-with-logits averaged separately over fake (target > 0.5) and
    real samples; loss is the mean over the classes present in the batch. A missing class gives None
    and is not counted (the original still divided by 2, docs/differences.md#classifier-training-fixes)."""
    if logits.numel() == 0:
        raise ValueError("balanced_bce needs a non-empty batch")
    is_fake = targets > 0.5
    parts = []
    for mask in (is_fake, ~is_fake):
        parts.append(F.binary_cross_entropy_with_logits(logits[mask], targets[mask]) if mask.any() else None)
    present = [p for p in parts if p is not None]
    return torch.stack(present).mean(), parts[0], parts[1]


class EpochMeter:
    """Accumulates one epoch: accuracy over all samples (not a mean of batch accuracies,
    docs/differences.md#classifier-training-fixes) and sample-weighted losses. A prediction is fake when
    sigmoid(logit) > 0.5; a target when > 0.5, so smoothed labels count as their class."""

    def __init__(self):
        self.correct = 0
        self.sums = {"loss": 0.0, "fake_loss": 0.0, "real_loss": 0.0}
        self.counts = {"loss": 0, "fake_loss": 0, "real_loss": 0}

    def update(self, logits: Tensor, targets: Tensor, parts: tuple) -> None:
        """Add one batch; `parts` is balanced_bce_parts(logits, targets)."""
        logits, targets = logits.detach(), targets.detach()
        is_fake = targets > 0.5
        self.correct += int(((logits > 0) == is_fake).sum())
        sizes = (targets.numel(), int(is_fake.sum()), int((~is_fake).sum()))
        for name, value, size in zip(self.sums, parts, sizes):
            if value is not None:
                self.sums[name] += float(value) * size
                self.counts[name] += size

    def summary(self) -> dict:
        """{'n', 'accuracy' (fraction), 'loss', 'fake_loss', 'real_loss'}; nan where nothing was seen."""
        n = self.counts["loss"]
        result = {"n": n, "accuracy": self.correct / n if n else float("nan")}
        for name, total in self.sums.items():
            result[name] = total / self.counts[name] if self.counts[name] else float("nan")
        return result


@dataclass
class SplitData:
    """One split of the classifier data set: the image root, its face images and every video of the split."""

    split: str
    root: Path
    frames: pd.DataFrame  # video_id, frame, label: one row per face image
    videos: pd.DataFrame  # video_id, label, n_faces, status: one row per video, with or without faces
    rebuilt_by: str  # the data_preprocess.py flag that writes its images


def read_split(cfg: Config, split: str, kind: str) -> SplitData:
    """A split as written by data_preprocess.py --gen_deepfake_metadata, subset to deep_fake.training.<split>_size
    of its videos (seeded, stratified). Missing files are a ConfigError naming the key to fix."""
    root, frames_csv, videos_csv = frame_label_csvs(cfg, split, kind)
    root_key, csv_key = frame_label_keys(split, kind)
    for path in (frames_csv, videos_csv):
        if not path.is_file():
            raise ConfigError(f"config key '{csv_key}': {path} not found (write it with data_preprocess.py "
                              f"--gen_deepfake_metadata, or pass --set {csv_key}=PATH)")
    cfg.require_exists(root_key)
    frames = read_frame_labels(frames_csv)
    videos = read_video_table(videos_csv)
    size = cfg[f"deep_fake.training.{split}_size"]
    if size < 1:
        videos = subset_videos(videos, size, cfg["runtime.seed"])  # one row per video: whole videos are kept
        frames = frames[frames["video_id"].isin(videos["video_id"])].reset_index(drop=True)
    if frames.empty:
        raise ConfigError(f"config key '{csv_key}': {frames_csv} lists no face image for the {split} split")
    return SplitData(split, root, frames, videos, "--crop_faces" if kind == "plain" else "--gen_dfdc_mri")


def read_video_table(csv_path: Path) -> pd.DataFrame:
    """The per-video CSV (video_id, label, n_faces, status) with string ids."""
    table = read_csv_intermediate(csv_path, "--gen_deepfake_metadata", dtype={"video_id": str, "status": str})
    missing = [c for c in ("video_id", "label", "n_faces", "status") if c not in table.columns]
    if missing:
        raise ConfigError(f"{csv_path}: missing column(s) {missing}; expected video_id, label, n_faces, status")
    return table.astype({"label": int, "n_faces": int})


def frame_loader(data: SplitData, transform, batch_size: int, ctx: DistContext, seed: int, workers: int, *,
                 label_smoothing: float = 0.0, epoch: int = 0, skip_batches: int = 0, training: bool = False):
    dataset = FrameDataset(data.frames, data.root, transform, label_smoothing=label_smoothing,
                           rebuilt_by=data.rebuilt_by, augment_seed=derive_seed(seed, epoch, 2) if training else None)
    return make_loader(dataset, batch_size, ctx, seed=seed, epoch=epoch, workers=workers, shuffle=training,
                       training=training, skip_batches=skip_batches)
