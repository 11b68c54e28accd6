"""Score a labelled folder of videos with the app's engine: the same sampling, detector, crops, MRIs, classifier
and video rule as detect_deepfake_app.py, with the checkpoint's validation-tuned thresholds (never tuned here),
and the same metrics and definitions as deep_fake_detect.py --test_saved_model.

The per-video rows (utils.infer.folder) carry each face's probability, so the metrics are computed from every
row of a resumed run's CSV, old and new.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from utils.config import Config
from utils.errors import ConfigError
from utils.evaluation.label_files import CELEB_DF_TEST_LIST, Labels, Matched, match_videos, read_labels
from utils.evaluation.metrics import frame_metrics, json_safe, video_metrics, video_verdicts
from utils.evaluation.protocols import paper_protocol
from utils.infer.detect import Detector
from utils.infer.folder import score_folder
from utils.infer.rule import Thresholds

SUMMARY_METRICS = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "roc_auc": "auc", "average_precision": "ap",
                   "f1": "f1", "log_loss": "log_loss", "eer": "eer"}
DEFINITIONS = ("fake is the positive class; frame level: a face is fake when p > 0.5; video level: the app's rule "
               "(a face is fake when p > fake_threshold, a video when at least fake_fraction of its faces are) with "
               "the thresholds the classifier was exported with, never tuned on this set; videos where no face was "
               "found, or that could not be read, count as real with score 0 (n_no_face); the video ROC score is "
               "the mean p of its fake faces")


def frame_table(rows: list[dict]) -> pd.DataFrame:
    """One row per face (video_id = the video's path, probability, label) from the per-video rows."""
    faces = [(row["path"], float(p), int(row["label"])) for row in rows for p in str(row["face_probabilities"]).split()]
    return pd.DataFrame(faces, columns=["video_id", "probability", "label"])


def labelled_metrics(rows: list[dict], thresholds: Thresholds, grid: tuple[list, list]) -> dict:
    """Frame- and video-level metrics of the labelled rows, as deep_fake_detect.py --test_saved_model computes them
    (ours, with the given thresholds), and the paper's protocol under "paper": the `grid` of (fake thresholds,
    fake fractions) searched on this very set, videos without a face dropped."""
    frames = frame_table(rows)
    no_face = {row["path"]: int(row["label"]) for row in rows if not str(row["face_probabilities"]).split()}
    verdicts = video_verdicts(frames, thresholds.fake_threshold, thresholds.fake_fraction)
    frame = frame_metrics(frames["label"], frames["probability"]) if len(frames) else {"n": 0}
    video = video_metrics(verdicts, no_face)
    video["n_error"] = sum(row["status"] == "error" for row in rows)
    paper = None
    if len(frames):
        paper, _ = paper_protocol(frames, *grid, n_without_face=len(no_face))
        paper["note"] = ("tuned on the very videos it reports on (the paper's protocol): an optimistic figure, "
                         "not a held-out one; ours, above, is")
    return {"frame": json_safe(frame), "video": json_safe(video), "paper": json_safe(paper) if paper else None}


def leakage(labels: Labels, training_videos: set[str]) -> dict | None:
    """For Celeb-DF-v2's test list: how many of its videos the MRI-GAN was trained on (by file stem)."""
    if labels.format != CELEB_DF_TEST_LIST or not training_videos:
        return None
    listed = {Path(key).stem for key in labels.by_key}
    shared = sorted(listed & training_videos)
    return {"test_videos": len(listed), "in_mri_gan_training": len(shared), "videos": shared}


def mri_gan_training_videos(csv_paths: list[Path]) -> set[str]:
    """Video stems in the MRI-GAN's training CSVs (data_preprocess.py --gen_mri_dataset's split or pair CSVs)."""
    videos: set[str] = set()
    for path in csv_paths:
        try:
            table = pd.read_csv(path, dtype=str)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ConfigError(f"--mri_gan_pairs {path}: cannot read ({exc})") from None
        for column in ("video_id", "real_video", "fake_video"):
            if column in table.columns:
                videos.update(Path(str(v)).stem for v in table[column].dropna())
    return videos


def summary_lines(method: str, report: dict) -> list[str]:
    """A header and one line per method: videos, no-face videos, then the video and frame metrics (ours)."""
    video, frame = report["video"], report["frame"]
    header = (f"{'method':<13}{'videos':>7}{'no_face':>8}"
              + "".join(f"{'video_' + short:>16}" for short in SUMMARY_METRICS.values()) + f"{'frame_auc':>11}")
    values = [video.get(name) for name in SUMMARY_METRICS]
    line = (f"{method:<13}{video['n']:>7}{video['n_no_face']:>8}"
            + "".join(f"{'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.4f}':>16}"
                      for v in values)
            + f"{'n/a' if frame.get('roc_auc') is None else format(frame['roc_auc'], '.4f'):>11}")
    return [header, line]


def evaluation_report(method: str, labels: Labels, matched: Matched, rows: list[dict], thresholds: dict,
                      grid: tuple[list, list], models: dict, leak: dict | None) -> dict:
    """The report of a labelled folder; `thresholds` is the app's choice with the source of each value."""
    labelled = [row for row in rows if row.get("label", "") != ""]
    pair = Thresholds(thresholds["fake_threshold"], thresholds["fake_fraction"])
    return {
        "method": method, "labels": {"file": str(labels.path), "format": labels.format},
        "thresholds": thresholds, "models": models, "definitions": DEFINITIONS,
        "videos": {"labelled": len(matched.labels), "scored": len(labelled),
                   "unlabelled": len(matched.unlabelled), "unlabelled_videos": [str(v) for v in matched.unlabelled],
                   "labels_without_video": len(matched.missing), "missing_videos": matched.missing},
        **labelled_metrics(labelled, pair, grid),
        "mri_gan_leakage": leak,
    }


def training_csvs(cfg: Config, given: list[str] | None) -> list[Path]:
    """The MRI-GAN training CSVs to check for leakage: the ones given, else the config's MRI-GAN train split CSVs
    (data_preprocess.py --gen_mri_dataset) when they exist."""
    if given:
        return [Path(path) for path in given]
    keys = ("features.mri_dataset_real_train_csv", "features.mri_dataset_fake_train_csv")
    return [cfg.asset(key) for key in keys if cfg.asset(key).is_file()]


def evaluate_labelled(cfg: Config, detector: Detector, method: str, videos: list[Path], matched: Matched,
                      labels: Labels, out_csv: Path | None, save_mri: Path | None, leak: dict | None) -> dict:
    """Score the labelled videos (skipping those already in `out_csv`) and return the metrics report."""
    rows, _ = score_folder(detector, videos, matched.labels, out_csv, save_mri)
    grid = (cfg["deep_fake.evaluation.grid_fake_threshold"], cfg["deep_fake.evaluation.grid_fake_fraction"])
    return evaluation_report(method, labels, matched, rows, detector.thresholds, grid, detector.models, leak)


def prepare(cfg: Config, input_dir: Path, videos: list[Path], labels_path: str,
            mri_gan_pairs: list[str] | None) -> tuple[Labels, Matched, dict | None]:
    """Read and match the labels, check the MRI-GAN's training data for the test videos, and say on stderr what
    will not be scored (videos without a label, labels without a video) and any leakage, loudly."""
    labels = read_labels(labels_path)
    matched = match_videos(videos, input_dir, labels)
    if not matched.labels:
        raise ConfigError(f"--labels {labels_path}: no video of {input_dir} has a label in it")
    leak = leakage(labels, mri_gan_training_videos(training_csvs(cfg, mri_gan_pairs)))
    print(f"labels ({labels.format}): {len(matched.labels)} videos to score; {len(matched.unlabelled)} without a "
          f"label, {len(matched.missing)} labels without a video (listed in the JSON, not scored)", file=sys.stderr)
    if leak and leak["in_mri_gan_training"]:
        print(f"WARNING: LEAKAGE: {leak['in_mri_gan_training']} of the {leak['test_videos']} Celeb-DF-v2 test videos "
              f"are in the MRI-GAN's training data; the MRI method's numbers on this set are not a held-out result. "
              f"Rebuild the MRI-GAN data set with data_path.celeb_df_v2.exclude_from_mri_gan set to this list.",
              file=sys.stderr)
    return labels, matched, leak
