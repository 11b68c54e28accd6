"""The MRI-GAN data set: face crops paired with their MRI targets, redrawn every epoch as in the original.
Reads the four CSVs of data_preprocess.py --gen_mri_dataset (columns face_image, mri_image, class)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from utils.config import Config
from utils.errors import ConfigError
from utils.fileio import read_csv_intermediate
from utils.infer.generator import image_tensor
from utils.media.images import read_image

COLUMNS = ("face_image", "mri_image", "class")
CSV_KEYS = {
    ("real", "train"): "features.mri_dataset_real_train_csv",
    ("fake", "train"): "features.mri_dataset_fake_train_csv",
    ("real", "test"): "features.mri_dataset_real_test_csv",
    ("fake", "test"): "features.mri_dataset_fake_test_csv",
}


def read_pairs(path: Path, expected_class: str, key: str) -> pd.DataFrame:
    """The rows of one data set CSV (face_image, mri_image, class) with absolute paths; extra columns are
    dropped. Any problem is a ConfigError naming the file (and the config key that points at it)."""
    if not path.is_file():
        raise ConfigError(f"config key '{key}': {path} does not exist (run data_preprocess.py --gen_mri_dataset, "
                          f"or pass --set {key}=PATH)")
    table = read_csv_intermediate(path, "--gen_mri_dataset", dtype=str, keep_default_na=False)
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    if table.empty:
        raise ConfigError(f"{path}: holds no rows")
    table = table[list(COLUMNS)].copy()
    wrong = table.index[table["class"] != expected_class]
    if len(wrong):
        raise ConfigError(f"{path}: row {wrong[0] + 1} has class {table.at[wrong[0], 'class']!r}, "
                          f"expected {expected_class!r}")
    for column in ("face_image", "mri_image"):
        if (table[column].str.strip() == "").any():
            raise ConfigError(f"{path}: empty {column} in row {int(np.argmax(table[column].str.strip() == '')) + 1}")
        # the original wrote absolute paths; a relative one is taken relative to the CSV's folder
        table[column] = [str(path.parent / value) if not Path(value).is_absolute() else value
                         for value in table[column]]
    return table.reset_index(drop=True)


def load_split(cfg: Config, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reals, fakes) of split 'train' or 'test', from the CSVs named in the config."""
    return tuple(read_pairs(cfg.asset(CSV_KEYS[kind, split]), kind, CSV_KEYS[kind, split])
                 for kind in ("real", "fake"))


def draw_epoch(reals: pd.DataFrame, fakes: pd.DataFrame, frac: float, seed: int, epoch: int) -> pd.DataFrame:
    """One epoch's rows, as the original drew them: a fraction `frac` of the reals, as many fakes as reals,
    shuffled. Fakes are drawn with replacement when there are fewer fakes than reals (the original crashed,
    docs/differences.md#classifier-training-fixes). Seeded by (seed, epoch), so every process and every resume draws
    the same rows."""
    rng = np.random.default_rng([seed, epoch])
    n_real = max(1, int(round(frac * len(reals))))
    real_rows = reals.iloc[rng.choice(len(reals), n_real, replace=False)]
    fake_rows = fakes.iloc[rng.choice(len(fakes), n_real, replace=len(fakes) < n_real)]
    table = pd.concat([real_rows, fake_rows], ignore_index=True)
    return table.iloc[rng.permutation(len(table))].reset_index(drop=True)


def test_rows(cfg: Config) -> pd.DataFrame:
    """The held-out rows the MRI-GAN is scored on: the test split drawn once (epoch 0, the config's seed and frac),
    so the scores of every epoch, and of every generator compared, are on the same faces."""
    return draw_epoch(*load_split(cfg, "test"), cfg["MRI_GAN.model_params.frac"], cfg["runtime.seed"], 0)


class MRIDataset(Dataset):
    """Items {"face": face, "mri": target MRI, "fake": 0/1} from one epoch's table (see `draw_epoch`).

    With `flip`, face and MRI are mirrored together with probability 0.5, decided by (seed, epoch, index):
    the same on every worker count and after a resume.
    """

    def __init__(self, table: pd.DataFrame, imsize: int, seed: int, epoch: int, flip: bool = True):
        self.faces = table["face_image"].tolist()
        self.mris = table["mri_image"].tolist()
        self.fake = (table["class"] == "fake").astype(int).tolist()
        self.imsize, self.seed, self.epoch, self.flip = imsize, seed, epoch, flip

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> dict:
        face = read_image(self.faces[index], rebuilt_by="--gen_mri_dataset")
        mri = read_image(self.mris[index], rebuilt_by="--gen_mri_dataset")
        if self.flip and np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5:
            face = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mri = mri.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {"face": image_tensor(face, self.imsize), "mri": image_tensor(mri, self.imsize),
                "fake": self.fake[index]}


def sample_items(dataset: MRIDataset, per_class: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(faces, target MRIs, "real"/"fake" labels) of the first `per_class` real and then fake items of a data set:
    the faces of the sample grids and of compare_MRI_GANs.py."""
    items = []
    for label in (0, 1):
        indices = [i for i, fake in enumerate(dataset.fake) if fake == label][:per_class]
        items += [dataset[i] for i in indices]
    faces = torch.stack([item["face"] for item in items])
    targets = torch.stack([item["mri"] for item in items])
    return faces, targets, ["fake" if item["fake"] else "real" for item in items]
