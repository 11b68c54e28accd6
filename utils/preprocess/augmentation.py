"""--apply_aug_to_sample, --gen_aug_plan, --apply_aug_to_all: the augmented copy of the DFDC training set."""
from __future__ import annotations

import json
from pathlib import Path

from utils.config import Config
from utils.datasets import dfdc_train_videos
from utils.errors import ConfigError
from utils.fileio import read_json_intermediate, write_json
from utils.media.video import VideoReader
from utils.preprocess import jobs
from utils.preprocess.common import Options


def apply_aug_to_sample(cfg: Config, sample_video: str | None) -> jobs.Summary:
    """Every augmentation, noise and distraction of one video, into assets/sample_augmentation/."""
    from utils.media.augment import sample_all

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
    from utils.media.augment import make_plan

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
    from utils.media.augment import augment_video

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
    plan_file = read_json_intermediate(_plan_path(cfg), "--gen_aug_plan")
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
