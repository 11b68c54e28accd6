"""Frame- and video-level metrics, per-video verdicts under the one video rule (utils.infer.rule), the validation
grid search and ROC plots. Fake is the positive class (label 1); every rate comes from raw confusion counts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score, roc_curve

from utils.infer.rule import video_rule
from utils.plotting import new_figure, save_png


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, or nan when the rate is undefined (nothing to divide by)."""
    return numerator / denominator if denominator else math.nan


def _binary_metrics(labels, predictions, scores, probabilities=None) -> dict:
    """Every metric from 0/1 labels, 0/1 predictions and scores in [0, 1] (higher = more fake).
    The log loss uses `probabilities` when given (a ranking score need not be a calibrated probability).

    recall = TPR = tp/(tp+fn); specificity = TNR = tn/(tn+fp); fpr = 1-TNR; fnr = 1-TPR;
    precision = tp/(tp+fp); f1 = 2tp/(2tp+fp+fn); balanced_accuracy = mean recall of the classes
    present. Undefined rates (a zero denominator) and the ranking metrics on one-class input are nan.
    """
    labels = np.asarray(labels, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    scores = np.asarray(scores, dtype=float)
    tp = int(np.sum((predictions == 1) & (labels == 1)))
    fp = int(np.sum((predictions == 1) & (labels == 0)))
    tn = int(np.sum((predictions == 0) & (labels == 0)))
    fn = int(np.sum((predictions == 0) & (labels == 1)))
    recall, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    both_classes = tp + fn > 0 and tn + fp > 0
    class_recalls = [r for r in (recall, specificity) if not math.isnan(r)]
    return {
        "n": int(labels.size),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": _ratio(tp + tn, labels.size),
        "balanced_accuracy": float(np.mean(class_recalls)) if class_recalls else math.nan,
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "specificity": specificity,
        "fpr": _ratio(fp, fp + tn),
        "fnr": _ratio(fn, fn + tp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else math.nan,
        "eer": eer(labels, scores),
        "average_precision": float(average_precision_score(labels, scores)) if tp + fn else math.nan,
        "log_loss": float(log_loss(labels, scores if probabilities is None else probabilities, labels=[0, 1]))
        if labels.size else math.nan,
    }


def frame_metrics(labels: Sequence[int], probs: Sequence[float], threshold: float = 0.5) -> dict:
    """Metrics of per-face P(fake) against 0/1 labels; a face is predicted fake when p > threshold
    (strict, as the original's round(sigmoid)). Keys: n, tp, fp, tn, fn, accuracy, balanced_accuracy,
    precision, recall (TPR), specificity (TNR), fpr, fnr, f1, roc_auc, eer, average_precision,
    log_loss. One-class input gives nan for roc_auc and eer instead of failing."""
    probs = np.asarray(probs, dtype=float)
    return _binary_metrics(labels, probs > threshold, probs)


def eer(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Equal error rate: where the ROC curve's FPR equals its FNR (1 - TPR), interpolated linearly
    between the two ROC points the crossing lies between. nan unless both classes are present."""
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0 or labels.min() == labels.max():
        return math.nan
    fpr, tpr, _ = roc_curve(labels, np.asarray(scores, dtype=float), drop_intermediate=False)
    gap = (1.0 - tpr) - fpr  # FNR - FPR: +1 at the first ROC point, -1 at the last
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i])
    share = gap[i - 1] / (gap[i - 1] - gap[i])  # where the segment crosses gap = 0
    return float(fpr[i - 1] + share * (fpr[i] - fpr[i - 1]))


def _video_groups(frame_table: pd.DataFrame) -> tuple[list, list[np.ndarray], list | None]:
    """(video ids, per-video probability arrays, per-video labels or None), videos sorted by id."""
    missing = {"video_id", "probability"} - set(frame_table.columns)
    if missing:
        raise ValueError(f"frame table lacks column(s) {sorted(missing)}")
    ids, probs, labels = [], [], []
    has_label = "label" in frame_table.columns
    for video_id, group in frame_table.groupby("video_id", sort=True):
        ids.append(video_id)
        probs.append(group["probability"].to_numpy(dtype=float))
        if has_label:
            video_labels = group["label"].unique()
            if len(video_labels) != 1:
                raise ValueError(f"video {video_id!r} has frames with different labels {sorted(video_labels)}")
            labels.append(int(video_labels[0]))
    return ids, probs, labels if has_label else None


def _verdict_table(ids, probs, labels, fake_threshold: float, fake_fraction: float) -> pd.DataFrame:
    rows = []
    for video_id, video_probs in zip(ids, probs):
        is_fake, fake_prob, n_fake = video_rule(video_probs, fake_threshold, fake_fraction)
        rows.append({
            "video_id": video_id,
            "n_faces": video_probs.size,
            "n_fake": n_fake,
            "fake_fraction_observed": n_fake / video_probs.size,
            "mean_prob": float(video_probs.mean()),
            "fake_prob": fake_prob,
            "verdict": int(is_fake),
        })
    table = pd.DataFrame(rows, columns=["video_id", "n_faces", "n_fake", "fake_fraction_observed",
                                        "mean_prob", "fake_prob", "verdict"])
    if labels is not None:
        table["label"] = labels
    return table


def video_verdicts(frame_table: pd.DataFrame, fake_threshold: float, fake_fraction: float) -> pd.DataFrame:
    """One row per video (sorted by video_id) from a per-face table with columns video_id, probability and
    optionally label: video_id, n_faces, n_fake, fake_fraction_observed, mean_prob, fake_prob,
    verdict (1 = fake, by video_rule) and label when given."""
    return _verdict_table(*_video_groups(frame_table), fake_threshold, fake_fraction)


def video_metrics(video_table: pd.DataFrame, no_face_labels: Mapping | pd.Series | None = None) -> dict:
    """Video-level metrics from a video_verdicts table with labels: predictions are the verdicts, the
    ranking score (AUC, EER, AP) is fake_prob (the original's), and the log loss uses each video's mean
    face probability (fake_prob is 0 for every video judged real, which is no probability).

    `no_face_labels` maps the id of every video where no face was found to its label. Those videos
    are never dropped (docs/differences.md#counted-videos-and-one-rule): they are counted (n_no_face, no_face_videos)
    and scored as real (verdict 0, fake_prob 0), so a fake without faces counts as a miss; in the log loss their
    probability is 0.5 (no evidence either way).
    """
    if "label" not in video_table.columns:
        raise ValueError("video table has no 'label' column")
    no_face = pd.Series(no_face_labels if no_face_labels is not None else {}, dtype=int)
    both = sorted(set(map(str, no_face.index)) & set(map(str, video_table["video_id"])))
    if both:
        raise ValueError(f"video(s) {both[:3]} are listed both with faces and without faces")
    labels = np.concatenate([video_table["label"].to_numpy(dtype=int), no_face.to_numpy()])
    verdicts = np.concatenate([video_table["verdict"].to_numpy(dtype=int), np.zeros(len(no_face), int)])
    scores = np.concatenate([video_table["fake_prob"].to_numpy(dtype=float), np.zeros(len(no_face))])
    probabilities = np.concatenate([video_table["mean_prob"].to_numpy(dtype=float), np.full(len(no_face), 0.5)])
    metrics = _binary_metrics(labels, verdicts, scores, probabilities)
    metrics["n_no_face"] = int(len(no_face))
    metrics["no_face_videos"] = sorted(str(v) for v in no_face.index)
    return metrics


def grid_search(frame_table_valid: pd.DataFrame, thresholds: Sequence[float],
                fractions: Sequence[float]) -> tuple[float, float, pd.DataFrame]:
    """Choose the video rule's (fake_threshold, fake_fraction) by video accuracy on VALIDATION faces.

    Call it on the validation split only (docs/differences.md#thresholds-on-validation: the original tuned on test);
    the chosen pair is then applied unchanged to the test split. Settings are tried thresholds-major, and the
    first with the highest accuracy wins, as in the original. Returns (best_threshold,
    best_fraction, table of every setting with columns fake_threshold, fake_fraction, accuracy).
    """
    ids, probs, labels = _video_groups(frame_table_valid)
    if labels is None:
        raise ValueError("grid_search needs a 'label' column in the frame table")
    truth = np.asarray(labels)
    rows = []
    for threshold in thresholds:
        for fraction in fractions:
            verdicts = _verdict_table(ids, probs, None, threshold, fraction)["verdict"].to_numpy()
            rows.append({"fake_threshold": float(threshold), "fake_fraction": float(fraction),
                         "accuracy": float(np.mean(verdicts == truth))})
    table = pd.DataFrame(rows, columns=["fake_threshold", "fake_fraction", "accuracy"])
    best = table.loc[table["accuracy"].idxmax()]  # idxmax returns the first maximum
    return float(best["fake_threshold"]), float(best["fake_fraction"]), table


def json_safe(metrics: dict) -> dict:
    """A copy with nan/inf replaced by None, so json.dumps writes standard JSON (null)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}


def roc_png(labels: Sequence[int], scores: Sequence[float], path: str | Path, title: str) -> Path:
    """Save the ROC curve (with its AUC and EER in the legend) as a PNG, atomically."""
    labels = np.asarray(labels, dtype=int)
    figure = new_figure(5, 5, constrained=False)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    if labels.size and labels.min() != labels.max():
        fpr, tpr, _ = roc_curve(labels, np.asarray(scores, dtype=float))
        auc, equal_error = roc_auc_score(labels, scores), eer(labels, scores)
        axes.plot(fpr, tpr, linewidth=2, label=f"AUC = {auc:.4f}, EER = {equal_error:.4f}")
    else:
        axes.text(0.5, 0.35, "ROC undefined: only one class present", ha="center")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate (real called fake)",
             ylabel="True positive rate (fake called fake)", title=title)
    axes.legend(loc="lower right")
    return save_png(figure, path)
