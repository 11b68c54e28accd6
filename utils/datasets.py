"""What the data sets hold: DFDC parts and labels, Celeb-DF-v2 real/fake pairs, FDF/FFHQ image folders.

Every listing is sorted so that every run, worker and shard sees the same order. Nothing here writes.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils.config import Config
from utils.errors import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class DfdcVideo:
    """One entry of a DFDC part's metadata.json."""

    path: Path            # the video file (may be missing on disk)
    label: int            # 0 real, 1 fake
    original: str | None  # file name of the real video a fake was made from

    @property
    def video_id(self) -> str:
        return self.path.stem


def dfdc_train_videos(root: Path) -> list[DfdcVideo]:
    """Every entry of every `<root>/*/metadata.json`, sorted by path. Raises ConfigError if there are none."""
    entries = []
    for meta in sorted(Path(root).glob("*/metadata.json")):
        try:
            records = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{meta}: cannot read DFDC metadata ({exc.__class__.__name__})") from None
        for name, record in records.items():
            label = 0 if str(record.get("label", "")).upper() == "REAL" else 1
            entries.append(DfdcVideo(meta.parent / name, label, record.get("original")))
    if not entries:
        raise ConfigError(f"no DFDC part folders with metadata.json under {root} (config key data_path.dfdc.train)")
    return sorted(entries, key=lambda e: str(e.path))


def dfdc_pairs(videos: list[DfdcVideo]) -> list[tuple[DfdcVideo, DfdcVideo]]:
    """(original, fake) for every fake whose original is listed in the same part folder."""
    by_path = {v.path: v for v in videos}
    pairs = []
    for video in videos:
        if video.label == 1 and video.original:
            original = by_path.get(video.path.parent / video.original)
            if original is not None:
                pairs.append((original, video))
    return pairs


def read_split_labels(csv_path: Path) -> dict[str, int]:
    """DFDC valid/test labels.csv: first column the file name, column `label` 0/1; keyed by video stem.

    File names need not be numbers (the original assumed they were).
    """
    if not csv_path.is_file():
        raise ConfigError(f"labels file not found: {csv_path}")
    table = pd.read_csv(csv_path)
    if "label" not in table.columns:
        raise ConfigError(f"{csv_path}: no 'label' column")
    names = table.iloc[:, 0].astype(str)
    return {Path(name).stem: int(label) for name, label in zip(names, table["label"])}


_CELEB_REAL = re.compile(r"^(id\d+)_(\d+)$")


def celeb_df_mapping(real_dir: Path, fake_dir: Path) -> dict[str, list[str]]:
    """{real file name: [fake file names]}: fakes of real `idA_NNNN.mp4` are named `idA_idB_NNNN.mp4`."""
    fakes_by_key: dict[tuple[str, str], list[str]] = {}
    for fake in sorted(p.name for p in Path(fake_dir).glob("*.mp4")):
        parts = Path(fake).stem.split("_")
        if len(parts) >= 3:
            fakes_by_key.setdefault((parts[0], parts[-1]), []).append(fake)
    mapping = {}
    for real in sorted(p.name for p in Path(real_dir).glob("*.mp4")):
        match = _CELEB_REAL.match(Path(real).stem)
        if match:
            mapping[real] = fakes_by_key.get((match.group(1), match.group(2)), [])
    return mapping


def image_files(folder: Path) -> list[Path]:
    """Image files of a flat folder (FDF, FFHQ), sorted."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def split_labels(cfg: Config, split: str) -> dict[str, int]:
    """Video stem -> label (0 real, 1 fake) for a DFDC split."""
    if split == "train":
        return {v.video_id: v.label for v in dfdc_train_videos(cfg.path("data_path.dfdc.train"))}
    folder = cfg.path(f"data_path.dfdc.{split}")
    return read_split_labels(folder / cfg[f"data_path.dfdc.{split}_labels_csv_filename"])


def frame_label_keys(split: str, kind: str) -> tuple[str, str]:
    """(config key of the per-video image folders, config key of the frame-label CSV) for a split and kind."""
    if kind == "plain":
        return f"features.dfdc.crop_faces.{split}", f"data_path.dfdc.{split}_frame_labels_csv_filename"
    return f"features.dfdc.{split}_mrip2p_faces", f"features.dfdc.{split}_mriframe_label"


def frame_label_csvs(cfg: Config, split: str, kind: str) -> tuple[Path, Path, Path]:
    """(root folder of per-video images, frame-label CSV, per-video CSV) for a split and kind plain|mri."""
    root_key, csv_key = frame_label_keys(split, kind)
    csv = cfg.asset(csv_key)
    return cfg.path(root_key), csv, csv.with_name(f"{csv.stem}_videos.csv")


def celeb_df_test_list(text: str) -> dict[str, int] | None:
    """Celeb-DF-v2's List_of_testing_videos.txt ("<1|0> <folder>/<file>.mp4" per line, where the data set writes
    1 for real and 0 for fake) as {relative path: label with fake = 1}; None when `text` is not in that format."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or not all(len(parts) == 2 and parts[0] in ("0", "1") for parts in lines):
        return None
    return {video.replace("\\", "/"): 1 - int(number) for number, video in lines}

