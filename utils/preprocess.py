"""The preprocessing steps behind data_preprocess.py: landmarks, face crops, MRI data set, metadata CSVs.

Each step lists its items in sorted order, keeps its shard, skips items whose outputs exist, and writes
every output atomically (files: temp name then rename; per-video folders: hidden temp folder then rename).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from utils import jobs
from utils.config import Config, ConfigError
from utils.datasets import (celeb_df_mapping, dfdc_pairs, dfdc_train_videos, image_files,
                            read_split_labels)
from utils.faces import FaceDetector, crop_face, crop_name, faces_from_entry, landmarks_entry
from utils.fileio import read_rgb, write_csv, write_json, write_png
from utils.mri import compute_mri
from utils.video import VideoReader, list_videos

log = logging.getLogger(__name__)

DATASETS = ("dfdc", "celeb_df_v2", "fdf", "ffhq")
SPLITS = ("train", "valid", "test")
IMAGE_CHUNK = 256  # images per landmark job for FDF/FFHQ (one partial JSON each)
ITEM_ERRORS = (jobs.ItemError, OSError, ValueError)  # problems of one item; VideoError is a ValueError


@dataclass(frozen=True)
class Options:
    """How a step runs: processes, shard, where its problem CSV goes, and the device for models."""

    workers: int = 1
    shard: tuple[int, int] = (1, 1)
    report_dir: Path | None = None
    device: str = "cpu"

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
        train = tuple(v.path for v in dfdc_train_videos(dfdc_train_root(cfg)) if v.path.exists())
        sets.append(VideoSet("dfdc_train", train, cfg.path("features.dfdc.landmarks_path.train"),
                             cfg.path("features.dfdc.crop_faces.train")))
        for split in ("valid", "test"):
            folder = cfg.path(f"data_path.dfdc.{split}")
            if folder.is_dir():
                sets.append(VideoSet(f"dfdc_{split}", tuple(list_videos(folder, extensions)),
                                     cfg.path(f"features.dfdc.landmarks_path.{split}"),
                                     cfg.path(f"features.dfdc.crop_faces.{split}")))
            else:
                log.warning("DFDC %s skipped: %s not found (config key data_path.dfdc.%s)", split, folder, split)
    if "celeb_df_v2" in datasets:
        videos = list_videos(cfg.path("data_path.celeb_df_v2.real"), extensions)
        fake_dir = cfg.path("data_path.celeb_df_v2.fake")
        videos += list_videos(fake_dir, extensions) if fake_dir.is_dir() else []
        sets.append(VideoSet("celeb_df_v2", tuple(videos), cfg.path("features.celeb_df_v2.landmarks_path.train"),
                             cfg.path("features.celeb_df_v2.crop_faces.train")))
    return sets


@dataclass(frozen=True)
class ImageSet:
    name: str
    images: tuple[Path, ...]
    json_path: Path
    crops_dir: Path


def image_sets(cfg: Config, datasets: list[str]) -> list[ImageSet]:
    return [ImageSet(name, tuple(image_files(cfg.path(f"data_path.{name}.data_path"))),
                     cfg.path(f"features.{name}.json_filename"), cfg.path(f"features.{name}.crops_path"))
            for name in ("fdf", "ffhq") if name in datasets]


# ---------------------------------------------------------------------------------------------------
# Worker-side helpers


def detector_settings(cfg: Config, device: str) -> dict:
    return {"device": device, "thresholds": cfg["faces.detector_thresholds"],
            "min_face_size": cfg["faces.min_face_size"], "scale_factor": cfg["faces.scale_factor"],
            "detect_max_side": cfg["faces.detect_max_side"], "batch_size": cfg["faces.batch_size"]}


def init_detector(settings: dict) -> None:
    jobs.worker_state()["detector"] = FaceDetector(**settings)


def _detector() -> FaceDetector:
    return jobs.worker_state()["detector"]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _partial_dir(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


def _fresh_partial_dir(final: Path) -> Path:
    """An empty hidden folder beside `final`; a leftover one from a killed run is ours and is cleared."""
    tmp = _partial_dir(final)
    if tmp.exists():
        shutil.rmtree(tmp)  # our own unfinished output from an interrupted run, never an input
    tmp.mkdir(parents=True)
    return tmp


# ---------------------------------------------------------------------------------------------------
# --apply_aug_to_sample, --gen_aug_plan, --apply_aug_to_all


def apply_aug_to_sample(cfg: Config, sample_video: str | None) -> jobs.Summary:
    """Every augmentation, noise and distraction of one video, into assets/sample_augmentation/."""
    from utils.augment import sample_all

    if not sample_video:
        raise ConfigError("--apply_aug_to_sample needs --sample_video PATH")
    VideoReader(sample_video).close()  # a clear error for a bad file before any work
    summary = jobs.Summary("augmentation samples", total=1)
    written = sample_all(sample_video, cfg.path("assets") / "sample_augmentation", cfg["runtime.seed"])
    summary.done, summary.skipped, summary.outputs = (1, 0, len(written)) if written else (0, 1, 0)
    return summary


def _plan_path(cfg: Config) -> Path:
    return cfg.asset("data_path.dfdc.data_augmentation.plan_pkl_filename")


def gen_aug_plan(cfg: Config) -> jobs.Summary:
    """The seeded augmentation/distraction plan of the DFDC training videos that exist, as JSON."""
    from utils.augment import make_plan

    root = cfg.path("data_path.dfdc.train")
    videos = [str(v.path.relative_to(root)) for v in dfdc_train_videos(root) if v.path.exists()]
    plan = make_plan(videos, cfg["runtime.seed"])
    write_json(_plan_path(cfg), {"seed": cfg["runtime.seed"], "population": len(videos), "entries": plan})
    summary = jobs.Summary("augmentation plan", total=len(videos), done=len(videos), outputs=len(plan))
    return summary


def augment_job(item) -> jobs.Outcome:
    """One training video into the augmented copy of the data set: augmented, or linked when unplanned."""
    src, dst, entry, record_path = item
    dst = Path(dst)
    if dst.exists() or dst.is_symlink():
        return jobs.Outcome(jobs.SKIPPED)
    if entry is None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(Path(src).resolve())  # unchanged videos are links to the read-only originals
        return jobs.Outcome(jobs.DONE)
    from utils.augment import augment_video

    record = augment_video(src, dst, entry["steps"], entry["seed"])
    write_json(record_path, record)
    return jobs.Outcome(jobs.DONE, count=1)


def apply_aug_to_all(cfg: Config, options: Options) -> jobs.Summary:
    """Write the augmented copy of the DFDC training set: every part's metadata.json and every video."""
    root = cfg.path("data_path.dfdc.train")
    out = cfg.path("data_path.dfdc.data_augmentation.output_path")
    if out.resolve() == root.resolve():
        raise ConfigError("config key 'data_path.dfdc.data_augmentation.output_path' must differ from "
                          "data_path.dfdc.train: the training videos are never overwritten")
    plan_file = _read_json(_plan_path(cfg))
    if not isinstance(plan_file, dict):
        raise ConfigError(f"no augmentation plan at {_plan_path(cfg)}; run --gen_aug_plan first")
    plan = {entry["video"]: entry for entry in plan_file["entries"]}
    videos = [v for v in dfdc_train_videos(root) if v.path.exists()]
    for meta in sorted({v.path.parent / "metadata.json" for v in videos}):
        target = out / meta.relative_to(root)
        if not target.exists():
            write_json(target, json.loads(meta.read_text(encoding="utf-8")))
    records = cfg.path("assets") / cfg["data_path.dfdc.data_augmentation.metadata"]
    items = []
    for video in videos:
        rel = str(video.path.relative_to(root))
        items.append((str(video.path), str(out / rel), plan.get(rel), str(records / f"{video.video_id}.json")))
    return jobs.run_items("augment", jobs.select_shard(items, options.shard), augment_job, key=lambda it: it[0],
                          workers=options.workers, failures_csv=options.failures_csv("apply_aug_to_all"))


# ---------------------------------------------------------------------------------------------------
# --extract_landmarks


def landmarks_job(item) -> jobs.Outcome:
    """Detect faces on every k-th frame of one video; write <landmarks_dir>/<video_id>.json."""
    video, json_path, step = item
    json_path = Path(json_path)
    if json_path.exists() and isinstance(_read_json(json_path), dict):
        return jobs.Outcome(jobs.SKIPPED)
    record = {str(index): landmarks_entry(faces) for index, _, faces in _detector().detect_video(video, step)}
    write_json(json_path, record, indent=None)
    found = sum(entry[0] is not None for entry in record.values())
    return jobs.Outcome(jobs.DONE, count=1, problem="" if found else "no face in any sampled frame")


def image_landmarks_job(item) -> jobs.Outcome:
    """Detect faces on a chunk of images; write one partial JSON for the chunk."""
    images, chunk_path = item
    chunk_path = Path(chunk_path)
    if chunk_path.exists() and isinstance(_read_json(chunk_path), dict):
        return jobs.Outcome(jobs.SKIPPED)
    record, problems = {}, []
    for path in images:
        try:
            faces = _detector().detect([read_rgb(path)])[0]
        except OSError as exc:
            problems.append(str(exc))
            continue
        record[Path(path).name] = landmarks_entry(faces)
    write_json(chunk_path, record, indent=None)
    return jobs.Outcome(jobs.DONE, count=len(record), problem="; ".join(problems))


def extract_landmarks(cfg: Config, datasets: list[str], options: Options) -> list[jobs.Summary]:
    step = cfg["faces.frame_step"]
    init = (init_detector, (detector_settings(cfg, options.device),))
    summaries = []
    for vset in video_sets(cfg, datasets):
        items = [(str(v), str(vset.landmarks_dir / f"{v.stem}.json"), step) for v in vset.videos]
        summaries.append(jobs.run_items(f"landmarks {vset.name}", jobs.select_shard(items, options.shard),
                                        landmarks_job, key=lambda it: it[0], workers=options.workers,
                                        init=init[0], init_args=init[1],
                                        failures_csv=options.failures_csv(f"extract_landmarks_{vset.name}")))
    for iset in image_sets(cfg, datasets):
        chunks_dir = iset.json_path.with_name(f".{iset.json_path.stem}.chunks")
        items = [(tuple(str(p) for p in iset.images[i:i + IMAGE_CHUNK]), str(chunks_dir / f"{i // IMAGE_CHUNK:06d}.json"))
                 for i in range(0, len(iset.images), IMAGE_CHUNK)]
        summary = jobs.run_items(f"landmarks {iset.name}", jobs.select_shard(items, options.shard),
                                 image_landmarks_job, key=lambda it: it[1], workers=options.workers,
                                 init=init[0], init_args=init[1],
                                 failures_csv=options.failures_csv(f"extract_landmarks_{iset.name}"))
        _merge_chunks(items, iset.json_path)
        summaries.append(summary)
    return summaries


def _merge_chunks(items, json_path: Path) -> None:
    """Write the data set's single JSON once every chunk exists (the last shard to finish does it)."""
    merged = {}
    for _, chunk in items:
        part = _read_json(Path(chunk))
        if not isinstance(part, dict):
            return
        merged.update(part)
    write_json(json_path, merged, indent=None)


# ---------------------------------------------------------------------------------------------------
# --crop_faces


def crop_job(item) -> jobs.Outcome:
    """Crop every face listed in a video's landmarks JSON; the crop folder appears only when complete."""
    video, json_path, crop_dir, step, margin = item
    crop_dir = Path(crop_dir)
    if crop_dir.is_dir():
        return jobs.Outcome(jobs.SKIPPED)
    record = _read_json(Path(json_path))
    if not isinstance(record, dict):
        raise jobs.ItemError(f"no landmarks JSON {json_path}; run --extract_landmarks first")
    tmp = _fresh_partial_dir(crop_dir)
    written = 0
    with VideoReader(video) as reader:
        for index, frame in reader.frames(step):
            for face_index, face in enumerate(faces_from_entry(record.get(str(index)))):
                crop = crop_face(frame, face.box, margin)
                if crop is not None:
                    write_png(tmp / crop_name(index, face_index), crop)
                    written += 1
    tmp.rename(crop_dir)
    return jobs.Outcome(jobs.DONE, count=written, problem="" if written else "no face crops (no face found)")


def image_crop_job(item) -> jobs.Outcome:
    """Crop the faces of one image into <crops_dir>/<stem>_<j>.png; done when every listed crop exists."""
    image, entry, crops_dir, margin = item
    faces = faces_from_entry(entry)
    targets = [Path(crops_dir) / f"{Path(image).stem}_{j}.png" for j in range(len(faces))]
    if all(t.exists() for t in targets):
        return jobs.Outcome(jobs.SKIPPED)
    rgb = read_rgb(image)
    written = 0
    for face, target in zip(faces, targets):
        crop = crop_face(rgb, face.box, margin)
        if crop is not None and not target.exists():
            write_png(target, crop)
            written += 1
    return jobs.Outcome(jobs.DONE, count=written)


def crop_faces(cfg: Config, datasets: list[str], options: Options) -> list[jobs.Summary]:
    step, margin = cfg["faces.frame_step"], cfg["faces.crop_margin"]
    summaries = []
    for vset in video_sets(cfg, datasets):
        items = [(str(v), str(vset.landmarks_dir / f"{v.stem}.json"), str(vset.crops_dir / v.stem), step, margin)
                 for v in vset.videos]
        summaries.append(jobs.run_items(f"crops {vset.name}", jobs.select_shard(items, options.shard), crop_job,
                                        key=lambda it: it[0], workers=options.workers,
                                        failures_csv=options.failures_csv(f"crop_faces_{vset.name}")))
    for iset in image_sets(cfg, datasets):
        record = _read_json(iset.json_path)
        if not isinstance(record, dict):
            raise ConfigError(f"{iset.json_path} not found: run --extract_landmarks for {iset.name} first")
        items = [(str(p), record.get(p.name), str(iset.crops_dir), margin) for p in iset.images if p.name in record]
        summaries.append(jobs.run_items(f"crops {iset.name}", jobs.select_shard(items, options.shard),
                                        image_crop_job, key=lambda it: it[0], workers=options.workers,
                                        failures_csv=options.failures_csv(f"crop_faces_{iset.name}")))
    return summaries


# ---------------------------------------------------------------------------------------------------
# --gen_mri_dataset


@dataclass(frozen=True)
class PairGroup:
    """A real video and the fakes made from it, with the folders its MRI-GAN samples go to."""

    dataset: str
    real: Path
    fakes: tuple[Path, ...]
    crops_dir: Path   # --crop_faces output (used when mri.aligned_pairs is false)
    faces_dir: Path   # aligned crops of reals and fakes
    mri_dir: Path


def pair_groups(cfg: Config, datasets: list[str]) -> list[PairGroup]:
    groups = []
    if "dfdc" in datasets:
        videos = dfdc_train_videos(cfg.path("data_path.dfdc.train"))  # MRI targets come from the originals
        by_real: dict[Path, list[Path]] = {}
        for original, fake in dfdc_pairs(videos):
            if original.path.exists() and fake.path.exists():
                by_real.setdefault(original.path, []).append(fake.path)
        groups += [PairGroup("dfdc", real, tuple(fakes), cfg.path("features.dfdc.crop_faces.train"),
                             cfg.path("features.dfdc.mri_faces_path"), cfg.path("features.dfdc.mri_path"))
                   for real, fakes in sorted(by_real.items())]
    if "celeb_df_v2" in datasets:
        real_dir, fake_dir = cfg.path("data_path.celeb_df_v2.real"), cfg.path("data_path.celeb_df_v2.fake")
        mapping = celeb_df_mapping(real_dir, fake_dir)
        write_json(cfg.asset("data_path.celeb_df_v2.real_fake_mapping"), mapping)
        groups += [PairGroup("celeb_df_v2", real_dir / real, tuple(fake_dir / f for f in fakes),
                             cfg.path("features.celeb_df_v2.crop_faces.train"),
                             cfg.path("features.celeb_df_v2.mri_faces_path"), cfg.path("features.celeb_df_v2.mri_path"))
                   for real, fakes in mapping.items() if fakes]
    return groups


def _group_done(group: PairGroup, aligned: bool) -> bool:
    mri_done = all((group.mri_dir / f.stem).is_dir() for f in group.fakes)
    if not aligned:
        return mri_done
    faces = [group.real] + list(group.fakes)
    return mri_done and all((group.faces_dir / v.stem).is_dir() for v in faces)


def aligned_mri_job(item) -> jobs.Outcome:
    """Detect faces once on the real video; crop the real and each fake frame with that same box; MRI of each pair."""
    group, step, margin, size = item
    if _group_done(group, aligned=True):
        return jobs.Outcome(jobs.SKIPPED)
    real_crops: dict[str, np.ndarray] = {}
    boxes: dict[int, list] = {}
    height_width = None
    for index, frame, faces in _detector().detect_video(group.real, step):
        height_width = frame.shape[:2]
        boxes[index] = [face.box for face in faces]
        for face_index, box in enumerate(boxes[index]):
            crop = crop_face(frame, box, margin)
            if crop is not None:
                real_crops[crop_name(index, face_index)] = crop
    _write_folder(group.faces_dir / group.real.stem, real_crops)
    written, problems = 0, []
    for fake in group.fakes:
        if (group.mri_dir / fake.stem).is_dir() and (group.faces_dir / fake.stem).is_dir():
            continue
        try:
            fake_crops, mris = _aligned_fake(fake, boxes, real_crops, height_width, step, margin, size)
        except ITEM_ERRORS as exc:
            problems.append(f"{fake.name}: {exc}")
            continue
        _write_folder(group.faces_dir / fake.stem, fake_crops)
        _write_folder(group.mri_dir / fake.stem, mris)
        written += len(mris)
    if not real_crops:
        problems.append("no face in any sampled frame of the real video")
    return jobs.Outcome(jobs.DONE, count=written, problem="; ".join(problems))



def _aligned_fake(fake: Path, boxes: dict, real_crops: dict, height_width, step: int, margin: float, size: int):
    fake_crops, mris = {}, {}
    with VideoReader(fake) as reader:
        if height_width is not None and (reader.info.height, reader.info.width) != tuple(height_width):
            raise jobs.ItemError(f"frame size {reader.info.width}x{reader.info.height} differs from its original's")
        for index, frame in reader.frames(step):
            for face_index, box in enumerate(boxes.get(index, [])):
                name = crop_name(index, face_index)
                if name in real_crops:
                    fake_crops[name] = crop_face(frame, box, margin)
                    mris[name] = compute_mri(real_crops[name], fake_crops[name], size)
    return fake_crops, mris


def _write_folder(final: Path, images: dict[str, np.ndarray]) -> None:
    """Write images into a hidden temp folder, then rename it to `final` (which appears complete or not at all)."""
    if final.is_dir():
        return
    tmp = _fresh_partial_dir(final)
    for name, image in sorted(images.items()):
        write_png(tmp / name, image)
    tmp.rename(final)


def separate_box_mri_job(item) -> jobs.Outcome:
    """The original's way (mri.aligned_pairs false): MRIs of same-named crops from --crop_faces folders."""
    group, size = item
    if _group_done(group, aligned=False):
        return jobs.Outcome(jobs.SKIPPED)
    real_dir = group.crops_dir / group.real.stem
    if not real_dir.is_dir():
        raise jobs.ItemError(f"no crops of {group.real.name}; run --crop_faces first")
    written, problems = 0, []
    for fake in group.fakes:
        fake_dir = group.crops_dir / fake.stem
        if (group.mri_dir / fake.stem).is_dir():
            continue
        if not fake_dir.is_dir():
            problems.append(f"no crops of {fake.name}; run --crop_faces first")
            continue
        names = sorted({p.name for p in real_dir.glob("*.png")} & {p.name for p in fake_dir.glob("*.png")})
        mris = {name: compute_mri(read_rgb(real_dir / name), read_rgb(fake_dir / name), size) for name in names}
        _write_folder(group.mri_dir / fake.stem, mris)
        written += len(mris)
    return jobs.Outcome(jobs.DONE, count=written, problem="; ".join(problems))


def pair_rows(group: PairGroup, aligned: bool) -> list[dict]:
    """The (real, fake, MRI) rows a group has on disk now: rebuilt from the files, so re-runs never drop pairs."""
    faces_dir = group.faces_dir if aligned else group.crops_dir
    rows = []
    for fake in group.fakes:
        mri_folder = group.mri_dir / fake.stem
        if not mri_folder.is_dir():
            continue
        for mri in sorted(mri_folder.glob("*.png")):
            rows.append({"real_image": str(faces_dir / group.real.stem / mri.name),
                         "fake_image": str(faces_dir / fake.stem / mri.name), "mri_image": str(mri),
                         "real_video": group.real.stem, "fake_video": fake.stem, "dataset": group.dataset})
    return rows


def _identity(group: PairGroup) -> str:
    # Celeb-DF reals are idA_NNNN: all videos of one person stay on one side of the split.
    if group.dataset == "celeb_df_v2":
        return "celeb_df_v2:" + group.real.stem.split("_")[0]
    return f"{group.dataset}:{group.real.stem}"


def split_groups(groups: list[str], test_fraction: float, seed: int) -> set[str]:
    """The test groups: a seeded `test_fraction` of the distinct groups (at least one when there are two)."""
    unique = sorted(set(groups))
    if len(unique) < 2:
        return set()
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in order[:n_test]}


def gen_mri_dataset(cfg: Config, datasets: list[str], options: Options) -> list[jobs.Summary]:
    aligned = cfg["mri.aligned_pairs"]
    step, margin, size = cfg["faces.frame_step"], cfg["faces.crop_margin"], cfg["mri.size"]
    groups = pair_groups(cfg, datasets)
    if aligned:
        items = [(g, step, margin, size) for g in groups]
        summary = jobs.run_items("mri pairs", jobs.select_shard(items, options.shard), aligned_mri_job,
                                 key=lambda it: str(it[0].real), workers=options.workers, init=init_detector,
                                 init_args=(detector_settings(cfg, options.device),),
                                 failures_csv=options.failures_csv("gen_mri_dataset"))
    else:
        items = [(g, size) for g in groups]
        summary = jobs.run_items("mri pairs", jobs.select_shard(items, options.shard), separate_box_mri_job,
                                 key=lambda it: str(it[0].real), workers=options.workers,
                                 failures_csv=options.failures_csv("gen_mri_dataset"))
    if options.shard[1] == 1 or all(_group_done(g, aligned) for g in groups):
        write_mri_dataset_csvs(cfg, groups, aligned, datasets)
    else:
        log.warning("MRI data set CSVs not written yet: other shards are still running (re-run with --shard 1/1)")
    return [summary]


def write_mri_dataset_csvs(cfg: Config, groups: list[PairGroup], aligned: bool, datasets: list[str]) -> None:
    """Pair CSVs per data set, then the four MRI-GAN split CSVs (split by video group, seeded)."""
    seed = cfg["runtime.seed"]
    rows = pd.DataFrame([row | {"group": _identity(g)} for g in groups for row in pair_rows(g, aligned)],
                        columns=["real_image", "fake_image", "mri_image", "real_video", "fake_video", "dataset",
                                 "group"])
    for name, key in (("dfdc", "features.dfdc.mri_metadata_csv"),
                      ("celeb_df_v2", "features.celeb_df_v2.mri_metadata_csv")):
        if name in datasets:
            write_csv(cfg.asset(key), rows[rows["dataset"] == name].drop(columns="dataset"))
    # The original kept a random half of the DFDC crop rows; we keep half of the DFDC videos.
    dfdc_groups = sorted(set(rows.loc[rows["dataset"] == "dfdc", "group"]))
    keep = set(np.random.default_rng(seed).permutation(dfdc_groups)[: math.ceil(cfg["mri.dfdc_fraction"] *
                                                                             len(dfdc_groups))])
    rows = rows[(rows["dataset"] != "dfdc") | rows["group"].isin(keep)]
    blank = str(cfg.asset("features.blank_png"))
    fakes = pd.DataFrame({"face_image": rows["fake_image"], "mri_image": rows["mri_image"], "class": "fake",
                          "video_id": rows["fake_video"], "group": rows["group"]})
    reals = rows.drop_duplicates("real_image")
    reals = pd.DataFrame({"face_image": reals["real_image"], "mri_image": blank, "class": "real",
                          "video_id": reals["real_video"], "group": reals["group"]})
    extra = [{"face_image": str(p), "mri_image": blank, "class": "real", "video_id": f"{name}:{p.stem}",
              "group": f"{name}:{p.stem}"}
             for name in ("fdf", "ffhq") if name in datasets
             for p in image_files(cfg.path(f"features.{name}.crops_path"))
             if cfg.path(f"features.{name}.crops_path").is_dir()]
    reals = pd.concat([reals, pd.DataFrame(extra, columns=reals.columns)], ignore_index=True)
    # Groups with fakes and real-only groups (FDF/FFHQ images) are split separately, so both classes
    # reach the test side; a real video and its fakes share a group, so they always stay together.
    paired = set(fakes["group"])
    test_groups = (split_groups(sorted(paired), cfg["mri.test_split"], seed)
                   | split_groups(sorted(set(reals["group"]) - paired), cfg["mri.test_split"], seed))
    for table, kind in ((reals, "real"), (fakes, "fake")):
        is_test = table["group"].isin(test_groups)
        write_csv(cfg.asset(f"features.mri_dataset_{kind}_train_csv"), table[~is_test])
        write_csv(cfg.asset(f"features.mri_dataset_{kind}_test_csv"), table[is_test])
    log.info("MRI data set: %d real and %d fake rows, %d of %d groups in test", len(reals), len(fakes),
             len(test_groups), len(set(reals["group"]) | set(fakes["group"])))


# ---------------------------------------------------------------------------------------------------
# --gen_dfdc_mri


def init_generator(weights: str, device: str) -> None:
    from utils.mri_gan_infer import load_generator

    jobs.worker_state()["generator"] = load_generator(weights, device)
    jobs.worker_state()["device"] = device


def dfdc_mri_job(item) -> jobs.Outcome:
    """The generator's MRI of every face crop of one video, same file names; the folder appears when complete."""
    from utils.mri_gan_infer import predict_mris

    crop_dir, out_dir, batch_size = Path(item[0]), Path(item[1]), item[2]
    if out_dir.is_dir():
        return jobs.Outcome(jobs.SKIPPED)
    names = sorted(p.name for p in crop_dir.glob("*.png"))
    state = jobs.worker_state()
    # Each batch holds its own crops (the original reused the first 8 crops of the video for every batch).
    mris = predict_mris(state["generator"], [read_rgb(crop_dir / name) for name in names], state["device"], batch_size)
    _write_folder(out_dir, dict(zip(names, mris)))
    return jobs.Outcome(jobs.DONE, count=len(names), problem="" if names else "no face crops")


def gen_dfdc_mri(cfg: Config, options: Options) -> list[jobs.Summary]:
    """Run the trained generator (MRI_GAN.weights) over the DFDC crop folders of every split."""
    weights = cfg.asset("MRI_GAN.weights")
    if not weights.is_file():
        raise ConfigError(f"config key 'MRI_GAN.weights': {weights} not found; train the MRI-GAN and copy its "
                          "checkpoint_best_G.chkpt there (README, step 2)")
    summaries = []
    for split in SPLITS:
        crops = cfg.path(f"features.dfdc.crop_faces.{split}")
        if not crops.is_dir():
            log.warning("MRIs for DFDC %s skipped: %s not found (run --crop_faces first)", split, crops)
            continue
        out = cfg.path(f"features.dfdc.{split}_mrip2p_faces")
        folders = sorted(p for p in crops.iterdir() if p.is_dir() and not p.name.startswith("."))
        items = [(str(folder), str(out / folder.name), 8) for folder in folders]
        summaries.append(jobs.run_items(f"mri {split}", jobs.select_shard(items, options.shard), dfdc_mri_job,
                                        key=lambda it: it[0], workers=options.workers, init=init_generator,
                                        init_args=(str(weights), options.device),
                                        failures_csv=options.failures_csv(f"gen_dfdc_mri_{split}")))
    return summaries


# ---------------------------------------------------------------------------------------------------
# --gen_deepfake_metadata


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


def gen_deepfake_metadata(cfg: Config, options: Options) -> list[jobs.Summary]:
    """Frame-label CSVs (video_id, frame, label) per split and kind, plus a per-video CSV that keeps the
    videos where no face was found (n_faces 0), so evaluation can count them instead of losing them."""
    summaries = []
    for split in SPLITS:
        try:
            labels = split_labels(cfg, split)
        except ConfigError as exc:
            log.warning("frame labels for %s skipped: %s", split, exc)
            continue
        for kind in ("plain", "mri"):
            root, csv, videos_csv = frame_label_csvs(cfg, split, kind)
            if not root.is_dir():
                log.warning("frame labels %s/%s skipped: %s not found", split, kind, root)
                continue
            summary = jobs.Summary(f"metadata {split} {kind}")
            frames, videos = [], []
            folders = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
            for video_id in sorted(set(labels) | set(folders)):
                summary.total += 1
                if video_id not in labels:
                    summary.failed += 1
                    summary.problems.append((video_id, jobs.FAILED, "folder has no label in the split's labels"))
                    continue
                names = sorted(p.name for p in folders[video_id].glob("*.png")) if video_id in folders else []
                status = "ok" if names else ("no_face" if video_id in folders else "not_processed")
                frames += [(video_id, name, labels[video_id]) for name in names]
                videos.append((video_id, labels[video_id], len(names), status))
                summary.done += 1
            write_csv(csv, pd.DataFrame(frames, columns=["video_id", "frame", "label"]))
            write_csv(videos_csv, pd.DataFrame(videos, columns=["video_id", "label", "n_faces", "status"]))
            summary.outputs = len(frames)
            if options.report_dir is not None and summary.problems:
                write_csv(options.failures_csv(f"gen_deepfake_metadata_{split}_{kind}"),
                          pd.DataFrame(summary.problems, columns=["item", "status", "reason"]))
            summaries.append(summary)
    return summaries
