"""What the preprocessing steps share: run options, which videos and images each data set contributes,
the face detector held by each worker, and partial-folder handling (a folder appears complete or not at all).

Each step lists its items in sorted order, keeps its shard, skips items whose outputs exist, and writes
every output atomically (files: temp name then rename; per-video folders: hidden temp folder then rename).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.config import Config
from utils.datasets import dfdc_train_videos, folder_contents, image_folder_files
from utils.errors import ConfigError, ItemError
from utils.fileio import atomic_dir, folder_complete, write_png
from utils.media.faces import FaceDetector
from utils.media.video import list_videos
from utils.preprocess import jobs
from utils.runtime import Precision

log = logging.getLogger(__name__)

DATASETS = ("dfdc", "celeb_df_v2", "fdf", "ffhq")
SPLITS = ("train", "valid", "test")
IMAGE_CHUNK = 256  # images per landmark job for FDF/FFHQ (one partial JSON each)
ITEM_ERRORS = (ItemError, OSError, ValueError)  # problems of one item; VideoError is a ValueError


@dataclass(frozen=True)
class Options:
    """How a step runs: processes, shard, where its problem CSV goes, the device and precision for models (on CUDA:
    the visible GPUs and at most `workers_per_gpu` model-running workers on each), and (for --gen_dfdc_mri) the
    MRI rendering asked for on the command line (None: chosen by utils.infer.provenance.preprocess_rendering)."""

    workers: int = 1
    shard: tuple[int, int] = (1, 1)
    report_dir: Path | None = None
    device: str = "cpu"
    mri_rendering: str | None = None
    precision: Precision | None = None  # None: fp32
    workers_per_gpu: int = 2
    gpu_count: int = 0

    def model_workers(self) -> int:
        """Processes for a step that runs a model: `workers` (0 = one per CPU), on CUDA at most workers_per_gpu per
        GPU, since each worker holds its own CUDA context and models in GPU memory."""
        workers = jobs.resolve_workers(self.workers)
        if self.device.startswith("cuda"):
            return min(workers, self.workers_per_gpu * max(self.gpu_count, 1))
        return workers

    def failures_csv(self, step: str) -> Path | None:
        if self.report_dir is None:
            return None
        k, n = self.shard
        suffix = "" if n == 1 else f"_shard{k}of{n}"
        return self.report_dir / f"{step}{suffix}_failures.csv"


# ---------------------------------------------------------------------------------------------------
# Which videos and folders each data set contributes


def dfdc_train_root(cfg: Config) -> Path:
    """The DFDC training videos the landmark and crop steps read: augmented copies or the originals."""
    if cfg["data_path.dfdc.train_source"] == "augmented":
        root = cfg.path("data_path.dfdc.data_augmentation.output_path")
        if not root.is_dir():
            raise ConfigError(f"config key 'data_path.dfdc.data_augmentation.output_path': {root} does not exist; "
                              "run --gen_aug_plan and --apply_aug_to_all first, or pass "
                              "--set data_path.dfdc.train_source=original")
        return root
    return cfg.path("data_path.dfdc.train")


def chosen_datasets(cfg: Config, names: list[str] | None) -> list[str]:
    """The data sets to process: those named (each must exist), or every one whose input folder exists."""
    keys = {"dfdc": "data_path.dfdc.train", "celeb_df_v2": "data_path.celeb_df_v2.real",
            "fdf": "data_path.fdf.data_path", "ffhq": "data_path.ffhq.data_path"}
    if names:
        for name in names:
            cfg.require_exists(keys[name])
        return list(names)
    present = [name for name in DATASETS if cfg.path(keys[name]).exists()]
    if not present:
        cfg.require_exists(keys["dfdc"])  # raises, naming the key to set
    return present


@dataclass(frozen=True)
class VideoSet:
    """Videos whose landmarks go to one folder and crops to another (e.g. DFDC valid)."""

    name: str
    videos: tuple[Path, ...]
    landmarks_dir: Path
    crops_dir: Path


def video_sets(cfg: Config, datasets: list[str]) -> list[VideoSet]:
    extensions = cfg["faces.video_extensions"]
    sets = []
    if "dfdc" in datasets:
        root = dfdc_train_root(cfg)
        listed = dfdc_train_videos(root)
        train = tuple(v.path for v in listed if v.path.exists())
        if not train:
            raise ConfigError(f"DFDC training videos: the metadata.json files under {root} list {len(listed)} "
                              "videos and none of them is beside its metadata.json")
        sets.append(VideoSet("dfdc_train", train, cfg.path("features.dfdc.landmarks_path.train"),
                             cfg.path("features.dfdc.crop_faces.train")))
        for split in ("valid", "test"):
            folder = cfg.path(f"data_path.dfdc.{split}")
            if folder.is_dir():
                sets.append(VideoSet(f"dfdc_{split}", dfdc_split_videos(cfg, split, extensions),
                                     cfg.path(f"features.dfdc.landmarks_path.{split}"),
                                     cfg.path(f"features.dfdc.crop_faces.{split}")))
            else:
                log.warning("DFDC %s skipped: %s not found (config key data_path.dfdc.%s)", split, folder, split)
    if "celeb_df_v2" in datasets:
        videos = layout_videos(cfg, "data_path.celeb_df_v2.real", extensions,
                               "Celeb-DF-v2's real videos (Celeb-real/id<A>_<NNNN>.mp4)")
        fake_dir = cfg.path("data_path.celeb_df_v2.fake")
        videos += list_videos(fake_dir, extensions) if fake_dir.is_dir() else []
        sets.append(VideoSet("celeb_df_v2", tuple(videos), cfg.path("features.celeb_df_v2.landmarks_path.train"),
                             cfg.path("features.celeb_df_v2.crop_faces.train")))
    return sets


def layout_videos(cfg: Config, key: str, extensions, expected: str) -> list[Path]:
    """The videos directly in the folder of config key `key`, or a ConfigError saying what it should hold
    and what it holds."""
    folder = cfg.path(key)
    videos = list_videos(folder, extensions)
    if not videos:
        raise ConfigError(f"config key '{key}': {folder} should hold {expected} ({' '.join(extensions)}); "
                          f"found {folder_contents(folder)}")
    return videos


def dfdc_split_videos(cfg: Config, split: str, extensions) -> tuple[Path, ...]:
    """A DFDC valid/test folder's videos; the folder must hold its labels file too (the classifier's labels)."""
    key = f"data_path.dfdc.{split}"
    videos = layout_videos(cfg, key, extensions, f"the DFDC {split} videos and their labels file")
    labels = cfg.path(key) / cfg[f"data_path.dfdc.{split}_labels_csv_filename"]
    if not labels.is_file():
        raise ConfigError(f"config key '{key}': {cfg.path(key)} should hold {labels.name} (file name, label 0 real "
                          f"/ 1 fake) beside its {len(videos)} videos; found {folder_contents(cfg.path(key))}")
    return tuple(videos)


@dataclass(frozen=True)
class ImageSet:
    """An FDF/FFHQ folder: its images (flat or in sub-folders), its landmarks JSON and its crops folder."""

    name: str
    root: Path
    images: tuple[Path, ...]
    json_path: Path
    crops_dir: Path


def image_sets(cfg: Config, datasets: list[str]) -> list[ImageSet]:
    sets = []
    for name in ("fdf", "ffhq"):
        if name in datasets:
            key = f"data_path.{name}.data_path"
            sets.append(ImageSet(name, cfg.path(key), tuple(image_folder_files(cfg.path(key), key)),
                                 cfg.path(f"features.{name}.json_filename"), cfg.path(f"features.{name}.crops_path")))
    return sets


# ---------------------------------------------------------------------------------------------------
# Worker-side helpers


def detector_settings(cfg: Config, device: str) -> dict:
    return {"device": device, "thresholds": cfg["faces.detector_thresholds"],
            "min_face_size": cfg["faces.min_face_size"], "scale_factor": cfg["faces.scale_factor"],
            "detect_max_side": cfg["faces.detect_max_side"], "batch_size": cfg["faces.batch_size"]}


def init_detector(settings: dict) -> None:
    state = jobs.worker_state()
    state["detector"] = FaceDetector(**{**settings, "device": jobs.assigned_device(settings["device"])})
    state["detector_batch"] = settings["batch_size"]


def detector() -> FaceDetector:
    """The worker's face detector, with the batch size of this attempt (halved while an item is retried after
    running out of GPU memory, see jobs.batch_size)."""
    state = jobs.worker_state()
    state["detector"].batch_size = jobs.batch_size(state["detector_batch"])
    return state["detector"]


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_folder(final: Path, images: dict[str, np.ndarray]) -> None:
    """Write images into a hidden temp folder, then rename it to `final` (which appears complete or not at all);
    a finished folder is kept, a damaged one (a truncated PNG) is replaced."""
    if folder_complete(final):
        return
    with atomic_dir(final) as tmp:
        for name, image in sorted(images.items()):
            write_png(tmp / name, image)
