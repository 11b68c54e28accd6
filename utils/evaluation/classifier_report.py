"""The classifier's report on a split: the validation threshold search, per-video verdicts and metrics, and the
test's files (metrics.json, prediction CSVs, ROC curves, confusion matrices, the printed summary)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from utils.config import Config
from utils.evaluation.figures import write_confusion
from utils.evaluation.metrics import grid_search, json_safe, roc_png, video_metrics, video_verdicts
from utils.evaluation.protocols import paper_protocol
from utils.fileio import write_csv, write_json, write_text
from utils.infer.rule import Thresholds

TABLE_METRICS = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "roc_auc": "auc", "f1": "f1",
                 "log_loss": "log_loss", "average_precision": "ap", "eer": "eer"}
PAPER_METRICS = {"acc": "ACC", "tpr": "TPR", "fnr": "FNR", "fpr": "FPR", "tnr": "TNR", "f1": "F1",
                 "precision": "precision", "auc": "auc"}  # the notebook's rates (utils.evaluation.protocols)
DEFINITIONS = ("fake is the positive class; a face is fake when p > 0.5 (frame level) or p > fake_threshold (video "
               "rule); a video is fake when at least fake_fraction of its faces are fake; videos without a face count "
               "as real with score 0; video ROC scores are the mean p of its fake faces")


def tune_thresholds(frames: pd.DataFrame, cfg: Config) -> tuple[Thresholds, pd.DataFrame]:
    """(the chosen pair, every setting's video accuracy): the original's grid searched on VALIDATION faces. Videos
    without faces are scored the same under every setting, so they are left out."""
    fake_threshold, fake_fraction, grid = grid_search(frames, cfg["deep_fake.evaluation.grid_fake_threshold"],
                                                      cfg["deep_fake.evaluation.grid_fake_fraction"])
    return Thresholds(fake_threshold, fake_fraction), grid


def video_report(frames: pd.DataFrame, split_videos: pd.DataFrame,
                 thresholds: Thresholds) -> tuple[pd.DataFrame, dict]:
    """(one row per video of the split, video-level metrics) under the one video rule (utils.infer.rule.video_rule).
    Columns: video_id, label, n_faces, fake_fraction (share of its faces judged fake), mean_probability, verdict
    (1 = fake), n_fake, fake_prob (mean p of the fake faces: the ROC score), status.

    Videos of the split with no face image are kept: verdict real (0), fake_prob 0, status from the per-video
    CSV (`split_videos`: video_id, label, status), and counted in the metrics (n_no_face, no_face_videos)."""
    verdicts = video_verdicts(frames[["video_id", "probability", "label"]], thresholds.fake_threshold,
                              thresholds.fake_fraction)
    faceless = split_videos[~split_videos["video_id"].isin(verdicts["video_id"])]
    metrics = video_metrics(verdicts, dict(zip(faceless["video_id"], faceless["label"])))
    with_faces = pd.DataFrame({
        "video_id": verdicts["video_id"], "label": verdicts["label"], "n_faces": verdicts["n_faces"],
        "fake_fraction": verdicts["fake_fraction_observed"], "mean_probability": verdicts["mean_prob"],
        "verdict": verdicts["verdict"], "n_fake": verdicts["n_fake"], "fake_prob": verdicts["fake_prob"],
        "status": "ok"})
    without_faces = pd.DataFrame({
        "video_id": faceless["video_id"], "label": faceless["label"], "n_faces": 0, "fake_fraction": math.nan,
        "mean_probability": math.nan, "verdict": 0, "n_fake": 0, "fake_prob": 0.0,
        "status": faceless["status"].where(faceless["status"] != "ok", "no_face")})
    parts = [part for part in (with_faces, without_faces) if not part.empty]
    table = pd.concat(parts, ignore_index=True).sort_values("video_id").reset_index(drop=True)
    return table, metrics


def write_test_report(cfg: Config, out_dir: Path, kind: str, frames: pd.DataFrame, frame: dict,
                      split_videos: pd.DataFrame, thresholds: Thresholds, source: str, checkpoint: dict) -> dict:
    """Write a test's files into `out_dir` and return its report: `frames` are the split's scored faces
    (video_id, frame, label, probability), `frame` their metrics, `split_videos` every video of the split,
    `thresholds` the pair tuned on validation (from `source`), `checkpoint` what identifies the weights.
    The files: metrics.json (with the paper's protocol under "paper"), frame_predictions.csv,
    video_predictions.csv, roc_frame.png, roc_video.png, the confusion matrices (frame_, video_ and paper_video_
    + the logging.model_conf_matrix* names) and the printed report (logging.model_info_log)."""
    videos, video = video_report(frames, split_videos, thresholds)
    paper, paper_videos = paper_protocol(frames[["video_id", "probability", "label"]],
                                         cfg["deep_fake.evaluation.grid_fake_threshold"],
                                         cfg["deep_fake.evaluation.grid_fake_fraction"],
                                         n_without_face=video["n_no_face"])
    report = {
        "split": "test", "dataset": kind, "results_dir": str(out_dir), "checkpoint": checkpoint,
        "thresholds": {**thresholds.as_dict(), "source": source},
        "frame": json_safe(frame),
        "video": json_safe(video),
        "definitions": DEFINITIONS,
        "paper": json_safe(paper),
    }
    write_csv(out_dir / "frame_predictions.csv", frames[["video_id", "frame", "label", "probability"]])
    write_csv(out_dir / "video_predictions.csv", videos)
    roc_png(frames["label"], frames["probability"], out_dir / "roc_frame.png", f"Test faces ({kind})")
    roc_png(videos["label"], videos["fake_prob"], out_dir / "roc_video.png", f"Test videos ({kind})")
    names = {key: cfg[f"logging.{key}"] for key in ("model_conf_matrix_csv", "model_conf_matrix_png",
                                                     "model_conf_matrix_normalized_csv",
                                                     "model_conf_matrix_normalized_png")}
    write_confusion(out_dir, "frame", frames["label"], frames["probability"] > 0.5, names, f"Test faces ({kind})")
    write_confusion(out_dir, "video", videos["label"], videos["verdict"], names, f"Test videos ({kind})")
    write_confusion(out_dir, "paper_video", paper_videos["label"], paper_videos["verdict"], names,
                    f"Test videos ({kind}), paper's protocol")
    write_json(out_dir / "metrics.json", report)
    write_text(out_dir / cfg["logging.model_info_log"], format_report(report) + "\n")
    return report


def format_report(report: dict) -> str:
    """A few lines for the terminal: counts, thresholds and the main frame and video metrics."""
    frame, video = report["frame"], report["video"]
    thresholds = report["thresholds"]
    lines = [f"test split ({report['dataset']}): {frame['n']} faces, {video['n']} videos "
             f"({video['n_no_face']} without a face, counted as real)",
             f"thresholds: fake_threshold {thresholds['fake_threshold']}, fake_fraction "
             f"{thresholds['fake_fraction']} ({thresholds['source']})",
             f"{'level':<6}" + "".join(f"{short:>10}" for short in TABLE_METRICS.values())]
    for level, metrics in (("frame", frame), ("video", video)):
        values = [metrics.get(name) for name in TABLE_METRICS]
        lines.append(f"{level:<6}" + "".join(f"{'n/a' if v is None else f'{v:.4f}':>10}" for v in values))
    paper = report["paper"]
    lines += [f"paper's protocol, for comparison with its Table only: fake_threshold "
              f"{paper['thresholds']['fake_threshold']}, fake_fraction {paper['thresholds']['fake_fraction']} "
              f"(searched on this test split), {paper['n_videos']} videos ({paper['n_dropped_no_face']} without a face "
              f"dropped)",
              f"{'level':<6}" + "".join(f"{short:>10}" for short in PAPER_METRICS.values()),
              f"{'video':<6}" + "".join(f"{'n/a' if paper.get(name) is None else f'{paper[name]:.4f}':>10}"
                                        for name in PAPER_METRICS),
              "they differ because the paper tuned the thresholds on the test split itself, dropped the videos "
              "without a face and took ACC as the mean of the class recalls: only the first table is unbiased",
              f"results: {report['results_dir']}"]
    return "\n".join(lines)
