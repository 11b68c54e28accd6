"""--gen_mri_dataset: the MRI-GAN's data set. Each real video and its fakes are cropped with the same boxes,
each pair's MRI is computed, and the pair CSVs and the four split CSVs are written (split by video group)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from utils.config import Config
from utils.datasets import (
    celeb_df_mapping,
    celeb_df_test_list,
    dfdc_pairs,
    dfdc_train_videos,
    folder_contents,
    image_files,
)
from utils.errors import ConfigError, ItemError
from utils.fileio import folder_complete, read_rgb, write_csv, write_json
from utils.media.faces import crop_face, crop_name
from utils.media.mri import compute_mri
from utils.media.video import VideoReader
from utils.preprocess import jobs
from utils.preprocess.common import (
    ITEM_ERRORS,
    Options,
    detector,
    detector_settings,
    init_detector,
    write_folder,
)

log = logging.getLogger(__name__)


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
    """The real videos with their fakes whose MRI pairs the step computes: the kept share of DFDC
    (mri.dfdc_fraction, chosen here so that the others are never processed) and Celeb-DF-v2 (less its exclusions)."""
    groups = []
    if "dfdc" in datasets:
        videos = dfdc_train_videos(cfg.path("data_path.dfdc.train"))  # MRI targets come from the originals
        by_real: dict[Path, list[Path]] = {}
        for original, fake in dfdc_pairs(videos):
            if original.path.exists() and fake.path.exists():
                by_real.setdefault(original.path, []).append(fake.path)
        if not by_real:
            raise ConfigError(f"config key 'data_path.dfdc.train': the metadata.json files under "
                              f"{cfg.path('data_path.dfdc.train')} list no fake video whose original is on disk "
                              "beside it, so there is no MRI pair to compute")
        dfdc = [PairGroup("dfdc", real, tuple(fakes), cfg.path("features.dfdc.crop_faces.train"),
                          cfg.path("features.dfdc.mri_faces_path"), cfg.path("features.dfdc.mri_path"))
                for real, fakes in sorted(by_real.items())]
        keep = kept_groups([_identity(g) for g in dfdc], cfg["mri.dfdc_fraction"], cfg["runtime.seed"])
        groups += [g for g in dfdc if _identity(g) in keep]
    if "celeb_df_v2" in datasets:
        real_dir, fake_dir = cfg.path("data_path.celeb_df_v2.real"), cfg.path("data_path.celeb_df_v2.fake")
        mapping = celeb_df_mapping(real_dir, fake_dir)
        write_json(cfg.asset("data_path.celeb_df_v2.real_fake_mapping"), mapping)
        excluded = excluded_celeb_df_videos(cfg)
        mapping = {real: [fake for fake in fakes if fake not in excluded]
                   for real, fakes in mapping.items() if real not in excluded}
        groups += [PairGroup("celeb_df_v2", real_dir / real, tuple(fake_dir / f for f in fakes),
                             cfg.path("features.celeb_df_v2.crop_faces.train"),
                             cfg.path("features.celeb_df_v2.mri_faces_path"), cfg.path("features.celeb_df_v2.mri_path"))
                   for real, fakes in mapping.items() if fakes]
        if not any(g.dataset == "celeb_df_v2" for g in groups):
            raise ConfigError(f"config keys 'data_path.celeb_df_v2.real' and '.fake': no real id<A>_<NNNN>.mp4 in "
                              f"{real_dir} has a fake id<A>_id<B>_<NNNN>.mp4 in {fake_dir} (after the exclusions); "
                              f"found {folder_contents(real_dir)} and {folder_contents(fake_dir)}")
    return groups


def kept_groups(identities: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded `fraction` (rounded up) of the distinct groups. The original kept a random half of the DFDC crop
    rows; we keep half of the DFDC videos, each with its fakes."""
    unique = sorted(set(identities))
    return set(np.random.default_rng(seed).permutation(unique)[: math.ceil(fraction * len(unique))])


def excluded_celeb_df_videos(cfg: Config) -> set[str]:
    """File names of the Celeb-DF-v2 videos kept out of the MRI-GAN's data (data_path.celeb_df_v2.exclude_from_mri_gan:
    a List_of_testing_videos.txt, or none). A real video listed there takes its fakes out with it."""
    setting = cfg["data_path.celeb_df_v2.exclude_from_mri_gan"]
    if setting == "none":
        return set()
    path = Path(setting)
    try:
        listed = celeb_df_test_list(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError):
        listed = None
    if listed is None:
        raise ConfigError(f"config key 'data_path.celeb_df_v2.exclude_from_mri_gan': {path} is not a readable "
                          "Celeb-DF-v2 List_of_testing_videos.txt")
    return {Path(video).name for video in listed}


def _group_done(group: PairGroup, aligned: bool) -> bool:
    mri_done = all(folder_complete(group.mri_dir / f.stem) for f in group.fakes)
    if not aligned:
        return mri_done
    faces = [group.real] + list(group.fakes)
    return mri_done and all(folder_complete(group.faces_dir / v.stem) for v in faces)


def aligned_mri_job(item) -> jobs.Outcome:
    """Detect faces once on the real video; crop the real and each fake frame with that same box; MRI of each pair."""
    group, step, margin, size = item
    if _group_done(group, aligned=True):
        return jobs.Outcome(jobs.SKIPPED)
    real_crops: dict[str, np.ndarray] = {}
    boxes: dict[int, list] = {}
    height_width = None
    for index, frame, faces in detector().detect_video(group.real, step):
        height_width = frame.shape[:2]
        boxes[index] = [face.box for face in faces]
        for face_index, box in enumerate(boxes[index]):
            crop = crop_face(frame, box, margin)
            if crop is not None:
                real_crops[crop_name(index, face_index)] = crop
    write_folder(group.faces_dir / group.real.stem, real_crops)
    written, problems = 0, []
    for fake in group.fakes:
        if folder_complete(group.mri_dir / fake.stem) and folder_complete(group.faces_dir / fake.stem):
            continue
        try:
            fake_crops, mris = _aligned_fake(fake, boxes, real_crops, height_width, step, margin, size)
        except ITEM_ERRORS as exc:
            problems.append(f"{fake.name}: {exc}")
            continue
        write_folder(group.faces_dir / fake.stem, fake_crops)
        write_folder(group.mri_dir / fake.stem, mris)
        written += len(mris)
    if not real_crops:
        problems.append("no face in any sampled frame of the real video")
    return jobs.Outcome(jobs.DONE, count=written, problem="; ".join(problems))

def _aligned_fake(fake: Path, boxes: dict, real_crops: dict, height_width, step: int, margin: float, size: int):
    fake_crops, mris = {}, {}
    with VideoReader(fake) as reader:
        if height_width is not None and (reader.info.height, reader.info.width) != tuple(height_width):
            raise ItemError(f"frame size {reader.info.width}x{reader.info.height} differs from its original's")
        for index, frame in reader.frames(step):
            for face_index, box in enumerate(boxes.get(index, [])):
                name = crop_name(index, face_index)
                if name in real_crops:
                    fake_crops[name] = crop_face(frame, box, margin)
                    mris[name] = compute_mri(real_crops[name], fake_crops[name], size)
    return fake_crops, mris


def separate_box_mri_job(item) -> jobs.Outcome:
    """The original's way (mri.aligned_pairs false): MRIs of same-named crops from --crop_faces folders."""
    group, size = item
    if _group_done(group, aligned=False):
        return jobs.Outcome(jobs.SKIPPED)
    real_dir = group.crops_dir / group.real.stem
    if not real_dir.is_dir():
        raise ItemError(f"no crops of {group.real.name}; run --crop_faces first")
    written, problems = 0, []
    for fake in group.fakes:
        fake_dir = group.crops_dir / fake.stem
        if folder_complete(group.mri_dir / fake.stem):
            continue
        if not fake_dir.is_dir():
            problems.append(f"no crops of {fake.name}; run --crop_faces first")
            continue
        names = sorted({p.name for p in real_dir.glob("*.png")} & {p.name for p in fake_dir.glob("*.png")})
        mris = {name: compute_mri(read_rgb(real_dir / name, "--crop_faces"), read_rgb(fake_dir / name, "--crop_faces"),
                                  size) for name in names}
        write_folder(group.mri_dir / fake.stem, mris)
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
                                 key=lambda it: str(it[0].real), workers=options.model_workers(), init=init_detector,
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


def image_crops(cfg: Config, datasets: list[str]) -> list[tuple[str, Path, str]]:
    """(data set, crop, id) of every FDF/FFHQ face crop; the id is `<data set>:<crop path under the crops folder
    without .png>`, e.g. `fdf:00001_0`, or `ffhq:00000/00000_0` for a crop of FFHQ's thousands folders."""
    crops = []
    for name in ("fdf", "ffhq"):
        folder = cfg.path(f"features.{name}.crops_path")
        if name in datasets and folder.is_dir():
            crops += [(name, p, f"{name}:{p.relative_to(folder).with_suffix('').as_posix()}")
                      for p in image_files(folder)]
    return crops


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
    blank = str(cfg.asset("features.blank_png"))
    fakes = pd.DataFrame({"face_image": rows["fake_image"], "mri_image": rows["mri_image"], "class": "fake",
                          "video_id": rows["fake_video"], "group": rows["group"]})
    reals = rows.drop_duplicates("real_image")
    reals = pd.DataFrame({"face_image": reals["real_image"], "mri_image": blank, "class": "real",
                          "video_id": reals["real_video"], "group": reals["group"]})
    extra = [{"face_image": str(crop), "mri_image": blank, "class": "real", "video_id": ident, "group": ident}
             for name, crop, ident in image_crops(cfg, datasets)]
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
