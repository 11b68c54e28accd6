"""--gen_deepfake_metadata: the classifier's frame-label CSVs per split and kind, and a per-video CSV that
keeps the videos where no face was found."""
from __future__ import annotations

import logging

import pandas as pd

from utils.config import Config
from utils.datasets import frame_label_csvs, split_labels
from utils.errors import ConfigError
from utils.fileio import write_csv
from utils.infer.provenance import copy_record
from utils.preprocess import jobs
from utils.preprocess.common import SPLITS, Options

log = logging.getLogger(__name__)


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
            if kind == "mri":  # which generator made these MRIs, for the classifier trained on them
                copy_record(root, csv)
            summary.outputs = len(frames)
            if options.report_dir is not None and summary.problems:
                write_csv(options.failures_csv(f"gen_deepfake_metadata_{split}_{kind}"),
                          pd.DataFrame(summary.problems, columns=["item", "status", "reason"]))
            summaries.append(summary)
    return summaries
