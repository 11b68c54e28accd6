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
        hint = " (this is one part folder: point the key at the folder holding it)" \
            if (Path(root) / "metadata.json").is_file() else ""
        raise ConfigError(f"config key 'data_path.dfdc.train': {root} should hold DFDC part folders "
                          f"(dfdc_train_part_N/metadata.json listing videos); found {folder_contents(root)}{hint}")
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
    """Image files under a folder (FDF, FFHQ), flat or in sub-folders (FFHQ's thousands folders), sorted by their
    path relative to `folder`; hidden files and folders are skipped."""
    folder = Path(folder)
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def image_key(folder: Path, image: Path) -> str:
    """An image's name in the landmarks JSON: its path relative to the data set folder (the file name in a flat
    folder, as before; `00000/00000.png` in FFHQ's thousands folders, so names repeated in sub-folders stay apart)."""
    return Path(image).relative_to(folder).as_posix()


# FDF's image archives hold one sub-folder per resolution (`cc-by-nc-sa-2/8/`, ..., `cc-by-nc-sa-2/128/`), each
# with the same image numbers; FFHQ's thousands folders are five digits (`00000`), so the two never mix up.
_FDF_RESOLUTIONS = {str(2 ** n) for n in range(2, 11)}


def image_folder_files(folder: Path, key: str) -> list[Path]:
    """The images of an FDF/FFHQ folder, or a ConfigError naming the folder, what it should hold and what it holds."""
    folder = Path(folder)
    resolutions = sorted((p.name for p in folder.iterdir() if p.is_dir() and p.name in _FDF_RESOLUTIONS), key=int)
    if len(resolutions) > 1:
        raise ConfigError(f"config key '{key}': {folder} holds one folder per image size ({', '.join(resolutions)}), "
                          f"as FDF's archives do; point the key at one of them, e.g. {folder / resolutions[-1]}")
    images = image_files(folder)
    if not images:
        raise ConfigError(f"config key '{key}': {folder} should hold face images "
                          f"({' '.join(IMAGE_EXTENSIONS)}), flat or in sub-folders; found {folder_contents(folder)}")
    return images


def folder_contents(folder: Path) -> str:
    """What a folder holds, for error messages: '3 .mp4 files, 1 .json file, 2 folders', or 'nothing'."""
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    counts: dict[str, int] = {}
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        kind = "folder" if entry.is_dir() else f"{entry.suffix.lower() or 'extension-less'} file"
        counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        return "nothing"
    return ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


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

